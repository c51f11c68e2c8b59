"""Classify image files with an int8 .tflite on TFLM, a bundle on the host PatchRunner, or a Keras model.

Images are decoded, centre-cropped and resized as the training data is. Class names come from the
model's tflite-support metadata labels (a bundle's plan.json labels), else --labels, else indices.

  tinyvision predict --model=out/model.tflite --image=cat.jpg --image=dog.png
  tinyvision predict --model=out/bundle --image=photos/person/0001.jpg --top=3

A centroid detector (per-cell heatmap output) prints one line per detection: class, cell x / y and score.

  tinyvision predict --model=out/det.tflite --image=scene.png --threshold=0.5
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) int8 .tflite, bundle folder, or .keras / .h5")
flags.DEFINE_multi_string("image", None, "(required) JPEG/PNG file to classify; repeat the flag or give a comma list")
flags.DEFINE_integer("top", 3, "classes printed per image, best first")
flags.DEFINE_string("labels", None, "class names file (one per line) for a model without metadata labels")
flags.DEFINE_float("threshold", 0.5, "detectors: the class probability a heatmap peak must reach")
FLAGS = flags.FLAGS


def run():
    import numpy as np

    from converters.cli.classifier import model_list, open_model
    from tinyvision.data.loaders import decode_image_file
    from tinyvision.detection.runtime import Detector
    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import read_bytes

    if not FLAGS.model:
        raise TinyVisionError("--model is required")
    files = [f.strip() for value in FLAGS.image or [] for f in value.split(",") if f.strip()]
    if not files:
        raise TinyVisionError("--image is required (one or more image files)")
    if FLAGS.top < 1:
        raise TinyVisionError(f"--top must be at least 1, got {FLAGS.top}")
    (path,) = model_list([FLAGS.model])
    classifier = open_model(path)
    height, width, channels = classifier.input_shape
    if height != width or channels != 3:
        raise TinyVisionError(f"{classifier.name} takes {classifier.input_shape} images; predict feeds square RGB")
    if FLAGS.labels:
        classifier.labels = read_bytes(FLAGS.labels, "labels file").decode("utf-8", "replace").splitlines()
        if len(classifier.labels) != classifier.num_classes:
            what = "heatmap channels (background first)" if isinstance(classifier, Detector) else "classes"
            raise TinyVisionError(f"{FLAGS.labels} has {len(classifier.labels)} lines, the model has "
                                  f"{classifier.num_classes} {what}")
    images = np.stack([decode_image_file(f, height) for f in files])
    if isinstance(classifier, Detector):
        print_detections(classifier, files, images)
        return
    scores = classifier.scores(images)
    for file_name, row in zip(files, scores):
        best = np.argsort(-row, kind="stable")[:FLAGS.top]
        ranked = ", ".join(f"{classifier.class_name(i)} {row[i]:.3f}" for i in best)
        print(f"{file_name}: {classifier.class_name(best[0])}  ({ranked})")


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
