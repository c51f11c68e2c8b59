"""Classify image files with an int8 .tflite on TFLM, a bundle on the host PatchRunner, or a Keras model.

Images are decoded, centre-cropped and resized as the training data is. Class names come from the
model's tflite-support metadata labels (a bundle's plan.json labels), else --labels, else indices.

  tinyvision predict --model=out/model.tflite --image=cat.jpg --image=dog.png
  tinyvision predict --model=out/bundle --image=photos/person/0001.jpg --top=3

A centroid detector (per-cell heatmap output) prints one line per detection: class, cell x / y and score.

  tinyvision predict --model=out/det.tflite --image=scene.png --threshold=0.5

A box detector prints one line per box: class, x0 y0 x1 y1 in pixels of the image file (the model sees its
centre square, resized), score (objectness x class score), after class-wise NMS.

  tinyvision predict --model=out/box_bundle --image=scene.png --threshold=0.25
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) int8 .tflite, bundle folder, or .keras / .h5")
flags.DEFINE_multi_string("image", None, "(required) JPEG/PNG file to classify; repeat the flag or give a comma list")
flags.DEFINE_integer("top", 3, "classes printed per image, best first")
flags.DEFINE_string("labels", None, "class names file (one per line) for a model without metadata labels")
flags.DEFINE_float("threshold", 0.5, "detectors: the class probability a heatmap peak (or the score a box) must "
                   "reach")
flags.DEFINE_float("iou_threshold", 0.5, "box detectors: NMS drops a box overlapping a better one of its class by "
                   "more")
FLAGS = flags.FLAGS


def run():
    import numpy as np

    from converters.cli.classifier import model_list, open_model
    from tinyvision.data.loaders import decode_image_file
    from tinyvision.data.normalization import fed_image_shape
    from tinyvision.detection.runtime import BoxDetector, Detector
    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import read_bytes

    if not FLAGS.model:
        raise TinyVisionError("--model is required")
    files = [f.strip() for value in FLAGS.image or [] for f in value.split(",") if f.strip()]
    if not files:
        raise TinyVisionError("--image is required (one or more image files)")
    if FLAGS.top < 1:
        raise TinyVisionError(f"--top must be at least 1, got {FLAGS.top}")
    paths = model_list([FLAGS.model])
    if len(paths) != 1:
        raise TinyVisionError(f"predict runs one model, got {len(paths)}: {', '.join(paths)} (evaluate compares forms)")
    (path,) = paths
    classifier = open_model(path)
    height, width, _ = fed_image_shape(classifier.input_shape, classifier.name)
    if height != width:
        raise TinyVisionError(f"{classifier.name} takes {classifier.input_shape} images; predict feeds square ones")
    if FLAGS.labels:
        classifier.labels = read_bytes(FLAGS.labels, "labels file").decode("utf-8", "replace").splitlines()
        if len(classifier.labels) != classifier.num_classes:
            what = "heatmap channels (background first)" if isinstance(classifier, Detector) else "classes"
            raise TinyVisionError(f"{FLAGS.labels} has {len(classifier.labels)} lines, the model has "
                                  f"{classifier.num_classes} {what}")
    images = np.stack([decode_image_file(f, height) for f in files])
    if isinstance(classifier, BoxDetector):
        print_boxes(classifier, files, images)
        return
    if isinstance(classifier, Detector):
        print_detections(classifier, files, images)
        return
    scores = classifier.scores(images)
    for file_name, row in zip(files, scores):
        best = np.argsort(-row, kind="stable")[:FLAGS.top]
        ranked = ", ".join(f"{classifier.class_name(i)} {row[i]:.3f}" for i in best)
        print(f"{file_name}: {classifier.class_name(best[0])}  ({ranked})")


def print_boxes(detector, files, images):
    """One line per box: file, class name, x0 y0 x1 y1 in the file's pixels, score."""
    from tinyvision.errors import TinyVisionError

    if not 0 <= FLAGS.threshold < 1 or not 0 < FLAGS.iou_threshold <= 1:
        raise TinyVisionError(f"--threshold must lie in [0, 1) and --iou_threshold in (0, 1], got {FLAGS.threshold} "
                              f"and {FLAGS.iou_threshold}")
    for file_name, found in zip(files, detector.detections(images, FLAGS.threshold, FLAGS.iou_threshold)):
        to_file = file_pixels(file_name, detector.input_shape[0])
        print(f"{file_name}: {len(found)} box(es) at threshold {FLAGS.threshold:g}")
        for d in found:
            x0, y0, x1, y1 = to_file(d.box)
            print(f"  {detector.class_name(d.cls)} {x0:.1f} {y0:.1f} {x1:.1f} {y1:.1f} score {d.score:.3f}")


def file_pixels(file_name, resolution):
    """A function mapping a box in the model input's pixels to the image file's: decode_image_file takes the file's
    centred square of side min(height, width) and resizes it to ``resolution``."""
    import tensorflow as tf

    from tinyvision.fileio import read_bytes

    image = tf.io.decode_image(read_bytes(file_name, "image"), channels=3, expand_animations=False)
    height, width = (int(v) for v in image.shape[:2])
    side = min(height, width)
    scale, left, top = side / resolution, (width - side) // 2, (height - side) // 2
    return lambda box: (box[0] * scale + left, box[1] * scale + top, box[2] * scale + left, box[3] * scale + top)


def print_detections(detector, files, images):
    """One line per detection: file, class name, cell x / y, score (probability)."""
    from tinyvision.errors import TinyVisionError

    if not 0 < FLAGS.threshold < 1:
        raise TinyVisionError(f"--threshold must lie in (0, 1), got {FLAGS.threshold}")
    heatmaps = detector.heatmaps(images)
    names = detector.labels
    for file_name, found in zip(files, heatmaps.detections(FLAGS.threshold)):
        print(f"{file_name}: {len(found)} detection(s) at threshold {FLAGS.threshold:g}")
        for d in found:
            score = d.score if heatmaps.scale is None else heatmaps.scale * (d.score - heatmaps.zero_point)
            label = names[d.cls + 1] if d.cls + 1 < len(names) else f"class {d.cls}"
            print(f"  {label} cell x={d.x} y={d.y} score {score:.3f}")
