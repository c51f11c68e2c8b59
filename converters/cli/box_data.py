"""Box detection data for the CLI: a --dataset spec read as annotated boxes, fitted to a box detector's input.

Box detectors (models with a BoxHead) read the same --dataset flag as the other models, with the specs that
carry boxes: ``builtin_detection`` (procedural scenes, boxes known exactly), ``voc:FOLDER`` (Pascal VOC:
Annotations/*.xml, JPEGImages/), ``coco:ANNOTATIONS_JSON[:IMAGE_FOLDER]`` (COCO instances; images default to
the JSON's folder) and ``tfrecord:GLOB`` (TF Object Detection API Examples). File images of any size are
letterboxed to the model's square input, the boxes moved with them.
"""
import numpy as np

from tinyvision.errors import TinyVisionError

# Specs whose data are boxes, besides builtin_detection (common.DETECTION_DATASET).
BOX_KINDS = ("voc", "coco", "tfrecord")
BOX_DATASET_HELP = ("box detectors: builtin_detection, voc:FOLDER (Pascal VOC: Annotations/, JPEGImages/), "
                    "coco:ANNOTATIONS_JSON[:IMAGE_FOLDER] (images default to the JSON's folder) or tfrecord:GLOB "
                    "(TF Object Detection API Examples); files are letterboxed to the model input")
# Score threshold of the decoder when boxes are scored by mAP: low, since mAP ranks the detections itself.
MAP_SCORE_THRESHOLD = 0.05
# A box also trains every anchor of its cell whose shape it overlaps by more (benchmarks/box_detection.py: mAP@0.5
# 0.29 with one anchor per box, 0.49 with this).
EXTRA_ANCHOR_IOU = 0.3


def is_box_spec(spec):
    from converters.cli.common import DETECTION_DATASET

    return spec == DETECTION_DATASET or spec.partition(":")[0] in BOX_KINDS


def box_dataset(spec, resolution, split="train", samples=2000, seed=0, validation_split=0.0):
    """(float32 images [N, R, R, 3] in [-1, 1], [AnnotatedImage] with boxes in those pixels, class names):
    ``box_records`` with their images stacked."""
    records, names = box_records(spec, resolution, split, samples, seed, validation_split)
    return stacked_images(records), records, names


def stacked_images(records):
    """float32 [N, R, R, 3] in [-1, 1]: the records' images, as the models take them."""
    from tinyvision.data.normalization import normalize

    return normalize(np.stack([r.image for r in records]))


def box_records(spec, resolution, split="train", samples=2000, seed=0, validation_split=0.0):
    """([AnnotatedImage] of uint8 R x R images with boxes in their pixels, class names).

    builtin_detection renders ``samples`` scenes of ``split``; a file dataset with a ``validation_split`` gives
    its last ``int(validation_split * N)`` records (file order) for "val" and "test", the others for "train";
    with none (0), every record for each split, as folder: datasets.
    """
    from converters.cli.common import DETECTION_DATASET
    from tinyvision.data.detection import DETECTION_CLASSES, detection_samples
    from tinyvision.data.detection_augment import resize
    from tinyvision.data.detection_formats import annotated

    if spec == DETECTION_DATASET:
        records, names = [annotated(s) for s in detection_samples(samples, resolution, seed, split)], DETECTION_CLASSES
    else:
        records, names = _read_records(spec)
        if validation_split:
            kept = len(records) - int(validation_split * len(records))
            records = records[kept:] if split != "train" else records[:kept]
        if not records:
            raise TinyVisionError(f"{spec} has no {split} images (--validation_split={validation_split})")
        records = [resize(r, resolution) for r in records]
    return records, list(names)


def augmented_training_data(records, coding, grid, resolution, seed=0, extra_iou=EXTRA_ANCHOR_IOU):
    """An unbatched tf.data.Dataset of (float32 image in [-1, 1], ``coding.targets``): each epoch every record
    once, in a new order, randomly flipped and cropped (``tinyvision.data.detection_augment.augment``: the boxes
    move with the pixels, objects mostly cropped away are dropped). Only the records' uint8 pixels stay in
    memory; the float images and targets are made as the epoch runs."""
    import itertools

    import tensorflow as tf

    from tinyvision.data.detection_augment import augment
    from tinyvision.data.normalization import normalize

    epochs = itertools.count()

    def epoch():
        e = next(epochs)
        for i in np.random.default_rng((seed, e)).permutation(len(records)):
            record = augment(records[i], resolution, seed=(seed, e, int(i)))
            yield normalize(record.image), coding.targets(record.boxes, record.classes, grid, extra_iou)

    slots = coding.targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), grid).shape
    data = tf.data.Dataset.from_generator(epoch, output_signature=(
        tf.TensorSpec((resolution, resolution, 3), tf.float32), tf.TensorSpec(slots, tf.float32)))
    return data.apply(tf.data.experimental.assert_cardinality(len(records)))


def has_box_validation(spec, validation_split):
    """Whether ``box_dataset(spec, ..., split="val")`` gives held-out data."""
    from converters.cli.common import DETECTION_DATASET

    return spec == DETECTION_DATASET or bool(validation_split)


def mean_average_precisions(found, records):
    """(VOC mAP@0.5, COCO mAP@[.5:.95]) of per-image [BoxDetection] against the records' boxes."""
    from tinyvision.detection import GroundTruth, coco_map, voc_map

    truth = [GroundTruth.of(r) for r in records]
    return voc_map(found, truth).value, coco_map(found, truth).value


def _read_records(spec):
    import os

    from tinyvision.data import detection_formats as formats

    kind, _, path = spec.partition(":")
    if kind not in BOX_KINDS or not path:
        raise TinyVisionError(f"--dataset={spec} is not box data: expected {BOX_DATASET_HELP}")
    if kind == "voc":
        return formats.load_voc(path)
    if kind == "coco":
        annotations, _, images = path.partition(":")
        return formats.load_coco(annotations, images or os.path.dirname(os.path.abspath(annotations)))
    return formats.load_tfrecord(path)
