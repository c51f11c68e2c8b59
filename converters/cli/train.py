"""Train a .keras model on the built-in dataset or data on disk: float epochs, then QAT.

Runs under a tf.distribute strategy on tf.data input, so several GPUs or workers use
TensorFlow's own distribution (multi-worker reads TF_CONFIG).

  tinyvision train --model=out/model.keras --dataset=builtin_vww --epochs=3 --output=out/model_qat.h5
  tinyvision train --model=out/detector.keras --dataset=builtin_detection --output=out/detector_qat.h5

A centroid detector (per-cell heatmap output) trains on builtin_detection with the background-weighted
centroid loss, and the float and QAT models' centroid F1 on the val split is printed.

A box detector (a model with a BoxHead) trains with BoxLoss on its BoxCoding's targets from box data:
builtin_detection, voc:FOLDER, coco:ANNOTATIONS_JSON[:IMAGE_FOLDER] or tfrecord:GLOB (TF Object Detection
API); the float and QAT models' mAP@0.5 (VOC) and mAP@.5:.95 (COCO) on the val split are printed, and the
saved .h5 keeps the anchors and coding (QAT flattens the BoxHead).

  tinyvision train --model=out/boxes.keras --dataset=voc:data/voc --validation_split=0.2 --output=out/boxes_qat.h5
"""
from absl import flags

from converters.cli.common import DATASET_HELP, VALIDATION_SPLIT_HELP

flags.DEFINE_string("model", None, "(required) .keras model to train")
flags.DEFINE_string("output", None, "(required) where to save the trained model (.h5 for QAT models, which tfmot cannot reload from .keras)")
flags.DEFINE_string("dataset", "builtin", DATASET_HELP)
flags.DEFINE_string("val_dataset", None, "validation data (default: the built-in data's val split, a folder's "
                    "validation subset, or none for tfrecord:)")
flags.DEFINE_float("validation_split", 0.2, VALIDATION_SPLIT_HELP)
flags.DEFINE_integer("epochs", 3, "float training epochs")
flags.DEFINE_integer("qat_epochs", 1, "quantization-aware fine-tuning epochs")
flags.DEFINE_bool("qat", True, "fine-tune with quantization-aware training")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi-worker"], "tf.distribute strategy")
flags.DEFINE_integer("samples", 2000, "built-in dataset: training samples")
flags.DEFINE_integer("batch_size", 32, "global batch size")
flags.DEFINE_float("learning_rate", 2e-3, "float training learning rate")
flags.DEFINE_integer("seed", 0, "data and initialization seed")
flags.DEFINE_bool("augment", True, "box detectors: flip and crop each training image at random every epoch, the "
                  "boxes moved with it")
FLAGS = flags.FLAGS


def run():
    from converters.cli.common import (DETECTION_DATASET, dataset, has_validation_data, image_resolution,
                                       keras_box_coding, load_keras, save_keras)
    from tinyvision.data.detection import DEFAULT_STRIDE
    from tinyvision.detection.runtime import is_detector_output
    from tinyvision.errors import TinyVisionError
    from tinyvision.training import train

    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required")
    model = load_keras(FLAGS.model)
    resolution = image_resolution(model)
    coding = keras_box_coding(model, FLAGS.model)
    if coding is not None:
        train_box_detector(model, coding, resolution)
        return
    detector = is_detector_output(model.output_shape)
    if detector != (FLAGS.dataset == DETECTION_DATASET) or (FLAGS.val_dataset and detector != (
            FLAGS.val_dataset == DETECTION_DATASET)):
        raise TinyVisionError(f"{FLAGS.model} outputs {model.output_shape}: " + (
            f"a centroid detector trains on --dataset={DETECTION_DATASET}" if detector else
            f"a classifier cannot train on {DETECTION_DATASET}, which is for centroid and box detectors"))
    if detector and model.output_shape[1] * DEFAULT_STRIDE != resolution:
        raise TinyVisionError(f"{DETECTION_DATASET} has one target cell per {DEFAULT_STRIDE} x {DEFAULT_STRIDE} "
                              f"pixels; {FLAGS.model} maps "
                              f"{resolution} px to {model.output_shape[1]} cells")
    split = FLAGS.validation_split if FLAGS.val_dataset is None else 0.0
    train_ds, _ = dataset(FLAGS.dataset, resolution, "train", FLAGS.samples, FLAGS.seed, FLAGS.batch_size,
                          shuffle=True, validation_split=split)
    val_spec = FLAGS.val_dataset or (FLAGS.dataset if has_validation_data(FLAGS.dataset, split) else None)
    val_ds = None
    if val_spec:
        val_ds, _ = dataset(val_spec, resolution, "val", max(FLAGS.samples // 4, 64), FLAGS.seed, FLAGS.batch_size,
                            validation_split=split)
    else:
        print("no validation data: no accuracy is reported (give --val_dataset, or a folder: dataset "
              "with --validation_split)")
    result = train(model, train_ds, val_ds, epochs=FLAGS.epochs, qat=FLAGS.qat, qat_epochs=FLAGS.qat_epochs,
                   strategy=FLAGS.strategy, learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
                   seed=FLAGS.seed)
    for key, value in result.metrics.items():
        if detector:
            key = key.replace("accuracy", "cell_accuracy")  # a detector's Keras accuracy is per heatmap cell
        if value is not None:
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if detector and val_ds is not None:
        print_centroid_f1(result, resolution, max(FLAGS.samples // 4, 64))
    save_keras(result.model, FLAGS.output)
    print(f"wrote {FLAGS.output}")


def train_box_detector(model, coding, resolution):
    """Train a box detector on box targets, print its float and QAT mAP on the val split and save it."""
    from converters.cli.box_data import (EXTRA_ANCHOR_IOU, augmented_training_data, box_dataset, box_records,
                                         has_box_validation, is_box_spec, stacked_images)
    from converters.cli.common import save_keras
    from tinyvision.detection.box_coding import box_targets
    from tinyvision.errors import TinyVisionError
    from tinyvision.training import train

    for spec in filter(None, (FLAGS.dataset, FLAGS.val_dataset)):
        if not is_box_spec(spec):
            raise TinyVisionError(f"{FLAGS.model} is a box detector: it trains on box data (builtin_detection, "
                                  f"voc:, coco: or tfrecord:), not --dataset={spec}")
    grid = tuple(model.output_shape[1:3])
    if grid[0] * coding.stride != resolution or grid[1] * coding.stride != resolution:
        raise TinyVisionError(f"{FLAGS.model}: its box head has a stride of {coding.stride} px but maps {resolution} "
                              f"px to {grid} cells")
    split = FLAGS.validation_split if FLAGS.val_dataset is None else 0.0
    records, names = box_records(FLAGS.dataset, resolution, "train", FLAGS.samples, FLAGS.seed, split)
    if len(names) != coding.classes:
        raise TinyVisionError(f"--dataset={FLAGS.dataset} has {len(names)} classes ({', '.join(names)}), the box "
                              f"head of {FLAGS.model} {coding.classes}")
    val_spec = FLAGS.val_dataset or (FLAGS.dataset if has_box_validation(FLAGS.dataset, split) else None)
    val = None
    if val_spec:
        val = box_dataset(val_spec, resolution, "val", max(FLAGS.samples // 4, 64), FLAGS.seed, split)
    else:
        print("no validation data: no mAP is reported (give --val_dataset or --validation_split)")
    if FLAGS.augment:
        training_data = augmented_training_data(records, coding, grid, resolution, FLAGS.seed)
    else:
        training_data = (stacked_images(records), box_targets(records, coding, grid, EXTRA_ANCHOR_IOU))
    val_data = None if val is None else (val[0], box_targets(val[1], coding, grid, EXTRA_ANCHOR_IOU))
    print(f"training on {len(records)} images of {FLAGS.dataset} (classes: {', '.join(names)})"
          + (", randomly flipped and cropped each epoch" if FLAGS.augment else ""))
    result = train(model, training_data, val_data, epochs=FLAGS.epochs, qat=FLAGS.qat, qat_epochs=FLAGS.qat_epochs,
                   strategy=FLAGS.strategy, learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
                   seed=FLAGS.seed)
    print(f"seconds: {result.seconds:.1f}")
    if val is not None:
        print_box_map(result, coding, val)
    save_keras(result.model, FLAGS.output, box_coding=coding)
    print(f"wrote {FLAGS.output}")


def print_box_map(result, coding, val):
    """mAP@0.5 (VOC) and mAP@.5:.95 (COCO) of the float and the trained model on the val images."""
    from converters.cli.box_data import MAP_SCORE_THRESHOLD, mean_average_precisions
    from tinyvision.detection.runtime import keras_heatmaps

    images, records, _ = val
    models = [("float", result.float_model)] + ([("QAT", result.model)] if FLAGS.qat else [])
    for phase, model in models:
        found = [coding.decode(o, MAP_SCORE_THRESHOLD) for o in keras_heatmaps(model, images).values]
        voc, coco = mean_average_precisions(found, records)
        print(f"{phase} mAP@0.5 {voc:.4f} mAP@.5:.95 {coco:.4f} (score threshold {MAP_SCORE_THRESHOLD}, "
              f"{len(images)} val images)")


def print_centroid_f1(result, resolution, samples):
    """Centroid precision / recall / F1 of the float and the trained model on builtin_detection's val split."""
    from tinyvision.data.detection import DEFAULT_STRIDE, detection_arrays
    from tinyvision.detection import score_detections
    from tinyvision.detection.runtime import keras_heatmaps

    images, _, truth = detection_arrays(samples, resolution, FLAGS.seed, "val")
    models = [("float", result.float_model)] + ([("QAT", result.model)] if FLAGS.qat else [])
    for phase, model in models:
        s = score_detections(keras_heatmaps(model, images).detections(0.5), truth, DEFAULT_STRIDE)
        print(f"{phase} centroid precision {s.precision:.4f} recall {s.recall:.4f} F1 {s.f1:.4f} "
              f"(threshold 0.5, {samples} val images)")
