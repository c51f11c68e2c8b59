"""Accuracy of a model in each of its forms on labelled data: float Keras, int8 on TFLM, patch bundle.

Give one or more models (several --model flags or a comma list); all must take the same image
size. Prints top-1 accuracy side by side, per-class accuracy, and the int8 drop (float -> int8 /
bundle) in percentage points; --confusion writes a PNG with one confusion matrix per model.
Folder datasets are evaluated on their validation subset (--validation_split, as train uses).

  tinyvision evaluate --model=out/model_qat.h5,out/model.tflite,out/bundle --dataset=builtin_vww
  tinyvision evaluate --model=out/model.tflite --dataset=folder:photos --confusion=out/confusion.png

Centroid detectors (models whose output is a per-cell heatmap) are evaluated on builtin_detection: centroid
precision, recall and F1 per model (a detection is right when an object of its class has its centre within
--tolerance cells), and whether the int8 forms find exactly the same detections. A detector with other classes
than the scenes' three (one trained elsewhere, e.g. an Edge Impulse FOMO model) is scored class-agnostic.

  tinyvision evaluate --model=out/det_qat.h5,out/det.tflite,out/det_bundle --dataset=builtin_detection

Box detectors (models that carry a box coding: a BoxHead, or the anchors train / convert store) are evaluated
on box data (builtin_detection, voc:, coco:, tfrecord:; files on their --validation_split part, or whole
with 0): mAP@0.5 (VOC) and mAP@.5:.95 (COCO) per model, and whether the int8 forms give the same boxes.

  tinyvision evaluate --model=out/box_qat.h5,out/box.tflite,out/box_bundle --dataset=voc:data/voc
"""
import numpy as np
from absl import flags

from converters.cli.common import DATASET_HELP, VALIDATION_SPLIT_HELP

flags.DEFINE_multi_string("model", None, "(required) .keras / .h5, int8 .tflite or bundle folder; repeat the flag "
                          "or give a comma list to compare forms of one model")
flags.DEFINE_string("dataset", None, "(required) labelled data: " + DATASET_HELP)
flags.DEFINE_float("validation_split", 0.2, VALIDATION_SPLIT_HELP)
flags.DEFINE_integer("samples", 500, "largest number of images evaluated (built-in data: how many are rendered)")
flags.DEFINE_string("confusion", None, "write the confusion matrices to this PNG")
flags.DEFINE_integer("seed", 0, "built-in data seed")
flags.DEFINE_float("threshold", 0.5, "detectors: the class probability a heatmap peak must reach")
flags.DEFINE_float("box_threshold", 0.05, "box detectors: the score (objectness x class) a box must reach; low, "
                   "since mAP ranks the boxes by score itself")
flags.DEFINE_float("iou_threshold", 0.5, "box detectors: NMS drops a box overlapping a better one of its class by "
                   "more")
flags.DEFINE_integer("tolerance", 1, "detectors: how many cells (Chebyshev) a detection may lie from its object's "
                     "centre cell")
FLAGS = flags.FLAGS


def run():
    from converters.cli.classifier import KINDS, as_classifier, model_list, open_model
    from converters.cli.common import DETECTION_DATASET, dataset_arrays, progress
    from tinyvision.analysis.accuracy import Evaluation, plot_confusion
    from tinyvision.data.normalization import fed_image_shape
    from tinyvision.errors import TinyVisionError

    if not FLAGS.dataset:
        raise TinyVisionError("--dataset is required (the labelled images to evaluate on)")
    from tinyvision.detection.runtime import BoxDetector

    models = [open_model(path) for path in model_list(FLAGS.model)]
    if any(isinstance(m, BoxDetector) for m in models):
        evaluate_box_detectors(models)
        return
    if FLAGS.dataset == DETECTION_DATASET:
        evaluate_detectors(models)
        return
    classifiers = [as_classifier(m) for m in models]
    shapes = {c.input_shape for c in classifiers}
    if len(shapes) != 1:
        raise TinyVisionError("the models take different images: " +
                              ", ".join(f"{c.name} {c.input_shape}" for c in classifiers))
    classes = {c.num_classes for c in classifiers}
    if len(classes) != 1:
        raise TinyVisionError("the models have different class counts: " +
                              ", ".join(f"{c.name} {c.num_classes}" for c in classifiers))
    shape, num_classes = shapes.pop(), classes.pop()
    images, labels, names = dataset_arrays(FLAGS.dataset, fed_image_shape(shape, classifiers[0].name), "val",
                                           FLAGS.samples, FLAGS.seed, FLAGS.validation_split)
    if names is not None and len(names) != num_classes:
        raise TinyVisionError(f"{FLAGS.dataset} has {len(names)} classes, the model has {num_classes} outputs")
    names = names or next((c.labels for c in classifiers if c.labels), None) or [f"class {i}" for i in
                                                                                range(num_classes)]
    evaluations = []
    for c in classifiers:
        with progress(f"evaluating {c.name} ({KINDS[c.kind]}) on {len(images)} images"):
            evaluations.append(Evaluation.from_scores(c.name, c.kind, labels, c.scores(images)))
    for line in format_results(evaluations, names):
        print(line)
    if FLAGS.confusion:
        plot_confusion(evaluations, names, FLAGS.confusion)
        print(f"wrote {FLAGS.confusion}")


def format_results(evaluations, names):
    """Text lines: accuracy per model, per-class accuracy, the int8 drop."""
    width = max(12, *(len(e.name) + 2 for e in evaluations))
    lines = [f"{'model':<{width}}{'form':<8}{'accuracy':>10}{'samples':>9}"]
    lines += [f"{e.name:<{width}}{e.kind:<8}{e.accuracy:>10.4f}{len(e.labels):>9}" for e in evaluations]
    lines.append("")
    column = max(10, *(len(e.name) + 2 for e in evaluations))
    label_width = max(8, *(len(n) + 2 for n in names))
    lines.append(f"{'class':<{label_width}}{'images':>7}" + "".join(f"{e.name:>{column}}" for e in evaluations))
    counts = np.bincount(evaluations[0].labels, minlength=len(names))
    per_class = [e.per_class() for e in evaluations]
    for i, name in enumerate(names):
        cells = "".join(f"{'-' if np.isnan(pc[i]) else format(pc[i], '.4f'):>{column}}" for pc in per_class)
        lines.append(f"{name:<{label_width}}{counts[i]:>7}{cells}")
    floats = [e for e in evaluations if e.kind == "float"]
    quantized = [e for e in evaluations if e.kind != "float"]
    if floats and quantized:
        lines.append("")
        for q in quantized:
            drop = 100 * (floats[0].accuracy - q.accuracy)
            lines.append(f"int8 drop: {drop:+.2f} points ({floats[0].name} {floats[0].accuracy:.4f} -> "
                         f"{q.name} {q.accuracy:.4f}; {int(np.sum(q.predictions != floats[0].predictions))} "
                         f"predictions differ)")
    return lines



def evaluate_box_detectors(detectors):
    """mAP@0.5 and mAP@.5:.95 of each box detector on the box data's val split; which int8 forms agree."""
    from converters.cli.box_data import box_dataset, is_box_spec, mean_average_precisions
    from converters.cli.classifier import KINDS
    from converters.cli.common import progress
    from tinyvision.data.normalization import fed_image_shape
    from tinyvision.detection.runtime import BoxDetector
    from tinyvision.errors import TinyVisionError

    for d in detectors:
        if not isinstance(d, BoxDetector):
            raise TinyVisionError(f"{d.path} is not a box detector (it carries no box coding): evaluate box "
                                  "detectors apart from other models")
    if len({(d.input_shape, d.coding) for d in detectors}) != 1:
        raise TinyVisionError("the box detectors take different images or decode differently: " +
                              ", ".join(f"{d.name} {d.input_shape} {d.coding}" for d in detectors))
    if not is_box_spec(FLAGS.dataset):
        raise TinyVisionError(f"box detectors are evaluated on box data (builtin_detection, voc:, coco:, "
                              f"tfrecord:), not --dataset={FLAGS.dataset}")
    if not 0 <= FLAGS.box_threshold < 1 or not 0 < FLAGS.iou_threshold <= 1:
        raise TinyVisionError(f"--box_threshold must lie in [0, 1) and --iou_threshold in (0, 1], got "
                              f"{FLAGS.box_threshold} and {FLAGS.iou_threshold}")
    first = detectors[0]
    height, width, _ = fed_image_shape(first.input_shape, first.name)
    if height != width:
        raise TinyVisionError(f"box data is fitted to square images; {first.name} takes {first.input_shape}")
    images, records, names = box_dataset(FLAGS.dataset, height, "val", FLAGS.samples, FLAGS.seed,
                                         FLAGS.validation_split)
    if len(names) != first.coding.classes:
        raise TinyVisionError(f"--dataset={FLAGS.dataset} has {len(names)} classes, {first.name} "
                              f"{first.coding.classes}")
    images, records = images[:FLAGS.samples], records[:FLAGS.samples]
    results = []
    for d in detectors:
        with progress(f"detecting boxes with {d.name} ({KINDS[d.kind]}) on {len(images)} images"):
            found = d.detections(images, FLAGS.box_threshold, FLAGS.iou_threshold)
        results.append((d, found, mean_average_precisions(found, records)))
    for line in format_box_results(results, sum(len(r.classes) for r in records)):
        print(line)


def format_box_results(results, objects):
    """Text lines: mAP@0.5 and mAP@.5:.95 per model, and which int8 forms detect exactly alike."""
    width = max(12, *(len(d.name) + 2 for d, _, _ in results))
    lines = [f"box detection at score threshold {FLAGS.box_threshold:g}, NMS IoU {FLAGS.iou_threshold:g}, "
             f"{objects} objects:",
             f"{'model':<{width}}{'form':<8}{'mAP@0.5':>10}{'mAP@.5:.95':>12}{'boxes':>8}"]
    for d, found, (voc, coco) in results:
        lines.append(f"{d.name:<{width}}{d.kind:<8}{voc:>10.4f}{coco:>12.4f}{sum(map(len, found)):>8}")
    lines += _same_detection_lines([(d, found) for d, found, _ in results if d.kind != "float"])
    return lines


def evaluate_detectors(detectors):
    """Centroid precision / recall / F1 of each detector on the built-in detection data's val split."""
    from converters.cli.classifier import KINDS
    from converters.cli.common import DETECTION_DATASET, progress
    from tinyvision.data.detection import DETECTION_CLASSES, detection_arrays, detection_class_names
    from tinyvision.data.normalization import fed_image_shape
    from tinyvision.detection import score_detections
    from tinyvision.detection.runtime import Detector
    from tinyvision.errors import TinyVisionError

    for d in detectors:
        if not isinstance(d, Detector):
            raise TinyVisionError(f"{d.path} is a classifier (it outputs class scores, not a per-cell heatmap): "
                                  "builtin_detection evaluates centroid detectors")
    if len({(d.input_shape, d.grid) for d in detectors}) != 1:
        raise TinyVisionError("the models take different images or give different grids: " +
                              ", ".join(f"{d.name} {d.input_shape} -> {d.grid}" for d in detectors))
    if not 0 < FLAGS.threshold < 1:
        raise TinyVisionError(f"--threshold must lie in (0, 1), got {FLAGS.threshold}")
    if FLAGS.tolerance < 0:
        raise TinyVisionError(f"--tolerance must be >= 0 cells, got {FLAGS.tolerance}")
    first = detectors[0]
    height, width, _ = fed_image_shape(first.input_shape, first.name)
    if height != width or height % first.grid[0]:
        raise TinyVisionError(f"builtin_detection gives square images in whole cells; {first.name} takes "
                              f"{first.input_shape} with a {first.grid} grid")
    images, _, samples = detection_arrays(FLAGS.samples, height, FLAGS.seed, "val", first.stride)
    # A detector trained elsewhere (a face detector, say) has other classes than the built-in scenes.
    other_classes = {d.name for d in detectors if d.num_classes != len(detection_class_names())}
    if other_classes:
        print(f"{', '.join(sorted(other_classes))}: not the {len(DETECTION_CLASSES)} classes of {DETECTION_DATASET} "
              f"({', '.join(DETECTION_CLASSES)}), so scored class-agnostic (a detection of any class matches an object "
              "of any class): where it puts centres on these scenes, not how well it finds what it was trained for")
    results = []
    for d in detectors:
        with progress(f"detecting with {d.name} ({KINDS[d.kind]}) on {len(images)} images"):
            found = d.heatmaps(images).detections(FLAGS.threshold)
        results.append((d, found, score_detections(found, samples, d.stride, FLAGS.tolerance,
                                                   class_agnostic=d.name in other_classes)))
    for line in format_detection_results(results, sum(len(s.classes) for s in samples)):
        print(line)


def format_detection_results(results, objects):
    """Text lines: precision / recall / F1 per model, and which int8 forms detect exactly alike."""
    width = max(12, *(len(d.name) + 2 for d, _, _ in results))
    lines = [f"centroid detection at threshold {FLAGS.threshold:g}, tolerance {FLAGS.tolerance} cell(s), "
             f"{objects} objects:",
             f"{'model':<{width}}{'form':<8}{'precision':>10}{'recall':>8}{'F1':>8}{'TP':>6}{'FP':>6}{'FN':>6}"]
    for d, _, s in results:
        lines.append(f"{d.name:<{width}}{d.kind:<8}{s.precision:>10.4f}{s.recall:>8.4f}{s.f1:>8.4f}{s.tp:>6}"
                     f"{s.fp:>6}{s.fn:>6}")
    lines += _same_detection_lines([(d, found) for d, found, _ in results if d.kind != "float"])
    return lines


def _same_detection_lines(quantized):
    """Whether each int8 form (int8 .tflite, bundle) detects exactly what the one before it detects."""
    return [f"{b.name} vs {a.name}: {'the same detections on every image' if found_a == found_b else 'detections differ'}"
            for (a, found_a), (b, found_b) in zip(quantized, quantized[1:])]
