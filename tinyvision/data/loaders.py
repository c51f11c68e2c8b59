"""Loaders for real images on disk, giving the same (image, label) pipeline as the built-in data.

Both loaders decode JPEG/PNG (anything ``tf.io.decode_image`` reads) to RGB, take the
central square crop (``center_crop=True``) or squash the whole image, resize
(bilinear, antialiased) to ``resolution`` x ``resolution`` and normalize to float32 in
[-1, 1]. They yield (float32 [B, R, R, 3], int32 [B]) batches, or single samples when
``batch_size`` is None.

Checks that can be made up front (missing paths, no classes, no images, unreadable or
malformed first records) raise TinyVisionError before any training starts; a record
that is damaged further inside a TFRecord file surfaces when tf.data reaches it
(``check_all_records=True`` reads every record up front instead).
"""
import os
import random

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.data.normalization import normalize_tf
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import read_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
_FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def decode_and_resize(encoded, resolution, center_crop=True):
    """Encoded JPEG/PNG bytes (scalar string tensor) -> float32 [R, R, 3] in [-1, 1]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if center_crop:
        shape = tf.shape(image)
        side = tf.minimum(shape[0], shape[1])
        image = tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
    image = tf.image.resize(image, (resolution, resolution), method="bilinear", antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(normalize_tf(image), (resolution, resolution, 3))


SUBSETS = ("training", "validation")


def decode_image_file(path, resolution, center_crop=True):
    """One JPEG/PNG file -> float32 [R, R, 3] in [-1, 1], exactly as the loaders prepare training images."""
    encoded = read_bytes(path, "image")
    _check_decodable(encoded, path)
    return decode_and_resize(tf.constant(encoded), resolution, center_crop).numpy()


def image_folder_dataset(path, resolution, batch_size=32, shuffle=False, seed=0, center_crop=True,
                         validation_split=None, subset=None, split_seed=1337):
    """A folder with one sub-folder per class -> (tf.data.Dataset, class names).

    Class names are the sub-folder names in sorted order (label = position); images are
    the .jpg/.jpeg/.png files directly inside each class folder.
    validation_split / subset: keep only the "training" or "validation" part of the images, split
    as ``tf.keras.utils.image_dataset_from_directory`` does: the sorted file list is shuffled with
    ``split_seed`` and the last ``int(validation_split * N)`` files are the validation subset, so
    the split is the same on every call and the two subsets never share a file.
    """
    _check_resolution(resolution)
    files, labels, names = folder_files(path, validation_split, subset, split_seed)
    _check_decodable(read_bytes(files[0]), files[0])

    ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(labels, tf.int32)))
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda f, y: (decode_and_resize(tf.io.read_file(f), resolution, center_crop), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds, batch_size), names


def folder_files(path, validation_split=None, subset=None, split_seed=1337):
    """(image files, their labels, class names) of a folder with one sub-folder per class, in sorted order
    (of the ``subset``: see :func:`image_folder_dataset`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TinyVisionError(f"image folder {path} does not exist")
    if not os.path.isdir(path):
        raise TinyVisionError(f"{path} is not a folder (expected one sub-folder per class)")
    names = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not names:
        raise TinyVisionError(f"image folder {path} has no class sub-folders")
    files, labels = [], []
    for label, name in enumerate(names):
        folder = os.path.join(path, name)
        images = sorted(f for f in os.listdir(folder)
                        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))
        if not images:
            raise TinyVisionError(f"class folder {folder} has no {'/'.join(IMAGE_EXTENSIONS)} images")
        files += [os.path.join(folder, f) for f in images]
        labels += [label] * len(images)
    files, labels = split_files(files, labels, validation_split, subset, split_seed, path)
    return files, labels, names


def split_files(files, labels, validation_split, subset, seed, where):
    """The ``subset`` ("training" / "validation") of parallel ``files`` / ``labels`` lists (all when no split)."""
    if not validation_split:
        if subset is not None:
            raise TinyVisionError(f"subset {subset!r} needs a validation_split")
        return files, labels
    if not 0 < validation_split < 1:
        raise TinyVisionError(f"validation_split must be between 0 and 1, got {validation_split}")
    if subset not in SUBSETS:
        raise TinyVisionError(f"subset must be one of {SUBSETS} with a validation_split, got {subset!r}")
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    num_validation = int(validation_split * len(files))
    chosen = order[len(files) - num_validation:] if subset == "validation" else order[:len(files) - num_validation]
    if not chosen:
        raise TinyVisionError(f"image folder {where}: {len(files)} images leave none for the {subset} subset "
                              f"with validation_split {validation_split}")
    chosen.sort()
    return [files[i] for i in chosen], [labels[i] for i in chosen]


def tfrecord_dataset(paths, resolution, batch_size=32, shuffle=False, seed=0, label_offset=0, center_crop=True,
                     compression_type=None, check_all_records=False):
    """TFRecord files of tf.train.Example -> tf.data.Dataset of (image, label).

    Each Example needs ``image/encoded`` (JPEG/PNG bytes) and ``image/class/label``
    (int64). ``paths``: a file, a folder (all files in it), a glob pattern, or a list of
    those. ``label_offset`` is subtracted from stored labels (1 for ImageNet-style
    records where 0 means "background").
    """
    _check_resolution(resolution)
    files = _expand(paths)
    for f in files:
        _check_records(f, compression_type, check_all_records)

    def parse(record):
        features = tf.io.parse_single_example(record, _FEATURES)
        label = tf.cast(features[LABEL_KEY] - label_offset, tf.int32)
        return decode_and_resize(features[IMAGE_KEY], resolution, center_crop), label

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=compression_type),
                       cycle_length=min(len(files), 4), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(ds, batch_size)


def make_example(encoded_image, label):
    """A tf.train.Example in the layout :func:`tfrecord_dataset` reads (serialize with .SerializeToString())."""
    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(encoded_image)])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))


# --- helpers -------------------------------------------------------------------------------

def _finish(ds, batch_size):
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_resolution(resolution):
    if not isinstance(resolution, int) or resolution < 1:
        raise TinyVisionError(f"resolution must be a positive integer, got {resolution!r}")


def _check_decodable(encoded, where):
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError):
        raise TinyVisionError(f"{where}: not a decodable JPEG/PNG image") from None


def _expand(paths):
    """Files named by ``paths`` (file / folder / glob / list), sorted and de-duplicated."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = [os.path.join(p, f) for f in sorted(os.listdir(p)) if os.path.isfile(os.path.join(p, f))]
            if not found:
                raise TinyVisionError(f"TFRecord folder {p} is empty")
        elif os.path.isfile(p):
            found = [p]
        else:
            found = sorted(tf.io.gfile.glob(p)) if any(c in p for c in "*?[") else []
            if not found:
                raise TinyVisionError(f"no TFRecord files at {p}")
        files += [f for f in found if f not in files]
    if not files:
        raise TinyVisionError("no TFRecord files given")
    return files


def _check_records(path, compression_type, check_all):
    """Read the first (or every) record of ``path`` and check it parses and decodes."""
    count = 0
    try:
        for count, raw in enumerate(tf.data.TFRecordDataset(path, compression_type=compression_type), 1):
            _check_example(raw.numpy(), f"{path} record {count - 1}")
            if not check_all:
                break
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        raise TinyVisionError(f"{path}: not a readable TFRecord file (corrupt or truncated record "
                              f"{count})") from None
    if count == 0:
        raise TinyVisionError(f"TFRecord file {path} contains no records")


def _check_example(raw, where):
    try:
        example = tf.train.Example.FromString(raw)
    except Exception:  # protobuf raises its own DecodeError type  # noqa: BLE001
        raise TinyVisionError(f"{where}: not a serialized tf.train.Example") from None
    feature = example.features.feature
    for key, kind in ((IMAGE_KEY, "bytes_list"), (LABEL_KEY, "int64_list")):
        if key not in feature or len(getattr(feature[key], kind).value) != 1:
            raise TinyVisionError(f"{where}: missing or malformed '{key}' feature (need one {kind} value)")
    _check_decodable(feature[IMAGE_KEY].bytes_list.value[0], where)
