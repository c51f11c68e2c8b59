"""Classify image files with an int8 .tflite on TFLM, a bundle on the host PatchRunner, or a Keras model.

Images are decoded, centre-cropped and resized as the training data is. Class names come from the
model's tflite-support metadata labels (a bundle's plan.json labels), else --labels, else indices.

  tinyvision predict --model=out/model.tflite --image=cat.jpg --image=dog.png
  tinyvision predict --model=out/bundle --image=photos/person/0001.jpg --top=3
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) int8 .tflite, bundle folder, or .keras / .h5")
flags.DEFINE_multi_string("image", None, "(required) JPEG/PNG file to classify; repeat the flag or give a comma list")
flags.DEFINE_integer("top", 3, "classes printed per image, best first")
flags.DEFINE_string("labels", None, "class names file (one per line) for a model without metadata labels")
FLAGS = flags.FLAGS


def run():
    import numpy as np

    from converters.cli.classifier import model_list, open_classifier
    from tinyvision.data.loaders import decode_image_file
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
    classifier = open_classifier(path)
    height, width, channels = classifier.input_shape
    if height != width or channels != 3:
        raise TinyVisionError(f"{classifier.name} takes {classifier.input_shape} images; predict feeds square RGB")
    if FLAGS.labels:
        classifier.labels = read_bytes(FLAGS.labels, "labels file").decode("utf-8", "replace").splitlines()
        if len(classifier.labels) != classifier.num_classes:
            raise TinyVisionError(f"{FLAGS.labels} has {len(classifier.labels)} lines, the model has "
                                  f"{classifier.num_classes} classes")
    images = np.stack([decode_image_file(f, height) for f in files])
    scores = classifier.scores(images)
    for file_name, row in zip(files, scores):
        best = np.argsort(-row, kind="stable")[:FLAGS.top]
        ranked = ", ".join(f"{classifier.class_name(i)} {row[i]:.3f}" for i in best)
        print(f"{file_name}: {classifier.class_name(best[0])}  ({ranked})")
