"""Helpers the sub-commands share: dataset specs, Keras model files, progress lines."""
import contextlib
import os
import tempfile
import time
import warnings

from tinyvision.errors import TinyVisionError

DATASET_HELP = (
    "builtin (8 shape classes), builtin_vww (person / no person), builtin_detection (circles, squares and "
    "triangles with exact boxes, for centroid and box detectors), folder:PATH (one sub-folder per class) "
    "or tfrecord:GLOB (tf.train.Example with image/encoded, image/class/label; for a box detector, TF Object "
    "Detection API Examples); box detectors also read voc:FOLDER (Pascal VOC) and "
    "coco:ANNOTATIONS_JSON[:IMAGE_FOLDER] (COCO instances; images default to the JSON's folder)"
)
DETECTION_DATASET = "builtin_detection"
# The attribute of a box detector's .h5 file that holds its BoxCoding (JSON): QAT flattens the BoxHead, and
# with it the anchors, into builtin layers.
BOX_CODING_ATTRIBUTE = "tinyvision_box_coding"


VALIDATION_SPLIT_HELP = ("folder: datasets: the fraction of images held out for validation (the same files on "
                         "every run, as image_dataset_from_directory splits); 0 uses every image for both")


def dataset(spec, resolution, split="train", samples=2000, seed=0, batch_size=32, shuffle=False,
            validation_split=0.0):
    """A (tf.data.Dataset of (images, labels), class names) pair for a --dataset spec.

    split: "train", "val" or "test". Built-in data renders that split; a folder: dataset with a
    ``validation_split`` gives its training subset for "train" and its validation subset otherwise.
    """
    from tinyvision import data

    if spec == DETECTION_DATASET:
        from tinyvision.data import detection

        # Labels are per-cell centroid maps [R / 8, R / 8] (the detectors' output stride).
        ds = detection.detection_dataset(samples, resolution, seed=seed, split=split, batch_size=batch_size,
                                         shuffle=shuffle)
        return ds, list(detection.detection_class_names())
    if spec in ("builtin", "builtin_vww"):
        variant = "vww" if spec == "builtin_vww" else "shapes"
        ds = data.synthetic_dataset(samples, resolution=resolution, seed=seed, split=split, variant=variant,
                                    batch_size=batch_size, shuffle=shuffle)
        return ds, list(data.class_names(variant))
    kind, _, path = spec.partition(":")
    if kind == "folder" and path:
        subset = ("training" if split == "train" else "validation") if validation_split else None
        return data.image_folder_dataset(path, resolution, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                         validation_split=validation_split or None, subset=subset)
    if kind == "tfrecord" and path:
        return data.tfrecord_dataset(path, resolution, batch_size=batch_size, shuffle=shuffle, seed=seed), None
    if kind in ("voc", "coco"):
        raise TinyVisionError(f"--dataset={spec} holds boxes: it is for box detectors (a model with a BoxHead), "
                              "not for this model")
    raise TinyVisionError(f"unknown --dataset {spec!r}: expected {DATASET_HELP}")


def dataset_arrays(spec, input_shape, split, samples, seed=0, validation_split=0.0):
    """(float32 images [N, H, W, C], int labels [N], class names or None): at most ``samples`` of a --dataset."""
    import numpy as np

    height, width, channels = input_shape
    if height != width or channels != 3:
        raise TinyVisionError(f"datasets give square RGB images; the model takes {input_shape}")
    ds, names = dataset(spec, height, split, samples, seed, validation_split=validation_split)
    images, labels, count = [], [], 0
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
        count += len(y)
        if count >= samples:
            break
    if not count:
        raise TinyVisionError(f"{spec} gave no images")
    return np.concatenate(images)[:samples], np.concatenate(labels)[:samples].astype(np.int64), names


@contextlib.contextmanager
def progress(what):
    """Print ``what...`` before a step and its duration after it, so a long step is never silent."""
    print(f"{what} ...", flush=True)
    start = time.time()
    yield
    print(f"  done in {time.time() - start:.1f} s", flush=True)


def has_validation_data(spec, validation_split):
    """Whether ``dataset(spec, ..., split="val")`` gives held-out data (built-in splits, a split folder)."""
    return spec.startswith("builtin") or (spec.startswith("folder:") and bool(validation_split))


def image_resolution(model):
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2]:
        raise TinyVisionError(f"expected a square image input [N, R, R, C], the model takes {shape}")
    return int(shape[1])


def load_keras(path):
    """Load a .keras / .h5 model saved by tinyvision (our layers and tfmot QAT wrappers included)."""
    import tinyvision.layers  # noqa: F401  (registers the layers for deserialization)
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    if not os.path.isfile(path):
        raise TinyVisionError(f"no such model file: {path}")
    try:
        with tfmot.quantization.keras.quantize_scope():
            return tf.keras.models.load_model(path, compile=False)
    except Exception as e:
        raise TinyVisionError(f"cannot load Keras model {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def keras_box_coding(model, path):
    """A box detector's BoxCoding: its BoxHead's, else (a QAT model, whose BoxHead QAT flattened) the one
    ``save_keras`` stored in its .h5 file; None for any other model."""
    from tinyvision.detection import BoxCoding
    from tinyvision.layers import BoxHead

    heads = [layer for layer in model.layers if isinstance(layer, BoxHead)]
    if heads:
        return BoxCoding.of(heads[0])
    stored = None
    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "r") as f:
            stored = f.attrs.get(BOX_CODING_ATTRIBUTE)
    if stored is None:
        # QAT keeps the BoxHead's layer names (quant_box_head_sigmoid): its output is boxes, not a heatmap.
        if model.layers[-1].name.endswith("box_head_sigmoid"):
            raise TinyVisionError(f"{path} is a box detector (its output is a BoxHead's) without its anchors: "
                                  "save a QAT box detector with tinyvision train, which stores them in the .h5")
        return None
    import json

    try:
        return BoxCoding.from_dict(json.loads(stored), f"{path}: {BOX_CODING_ATTRIBUTE}")
    except ValueError:
        raise TinyVisionError(f"{path}: {BOX_CODING_ATTRIBUTE} is not JSON") from None


def save_keras(model, path, box_coding=None):
    """Save as .keras (or .h5) atomically: Keras writes a temp file in the same folder, renamed into place.

    QAT models must be .h5: tfmot's quantize wrappers do not reload from .keras files. A box detector's
    ``box_coding`` goes into an .h5 file's attributes (``keras_box_coding`` reads it back), since a QAT model
    has lost its BoxHead; a .keras box detector keeps its BoxHead, which carries the coding itself.
    """
    suffix = os.path.splitext(path)[1]
    if suffix not in (".keras", ".h5"):
        raise TinyVisionError(f"Keras models are saved as .keras or .h5 files, got {path}")
    if suffix == ".keras" and _is_qat(model):
        raise TinyVisionError(f"cannot save a QAT model as .keras (tfmot cannot reload it): use .h5 for {path}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
        os.close(fd)
    except OSError as e:
        raise TinyVisionError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            # tf_keras calls HDF5 "legacy"; tfmot's QAT models reload only from it (see above).
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            model.save(tmp)
        if box_coding is not None and suffix == ".h5":
            _store_box_coding(tmp, box_coding)
        os.replace(tmp, path)
    except OSError as e:
        raise TinyVisionError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _store_box_coding(h5_path, box_coding):
    import json

    import h5py

    with h5py.File(h5_path, "a") as f:
        f.attrs[BOX_CODING_ATTRIBUTE] = json.dumps(box_coding.to_dict())


def _is_qat(model):
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
