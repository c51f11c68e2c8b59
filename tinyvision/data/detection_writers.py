"""Writers of annotated detection samples in the formats :mod:`tinyvision.data.detection_formats` reads: a Pascal
VOC folder, a COCO instances JSON with its image folder, a TFRecord file in the TF Object Detection API layout.

Samples are DetectionSample-like (image uint8 [H, W, 3]; boxes float [n, 4] (x0, y0, x1, y1) continuous pixels;
classes int [n] into ``class_names``; optional difficult bool [n]). Images are stored as PNG (lossless), named
``000000.png``, ``000001.png``, ... VOC coordinates are integers (VOC tools parse them as such): a box is
written rounded, ``xmin = round(x0) + 1``, ``xmax = round(x1)``; COCO and TFRecord keep the floats.

Nothing is left half-written: a folder is built beside its destination and renamed into place at the end,
and a folder that already holds files is refused rather than mixed with.
"""
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ElementTree

import numpy as np

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.data import detection_formats as formats
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import atomic_write_bytes, atomic_write_text, read_bytes


def write_voc(samples, class_names, root, split=None):
    """Write ``samples`` as a VOC folder ``root`` (JPEGImages/*.png, Annotations/*.xml and, with ``split``,
    ImageSets/Main/<split>.txt listing every id)."""
    ids = _ids(samples)
    with _new_folder(root) as tmp:
        for i, sample in zip(ids, samples):
            _write_png(os.path.join(tmp, "JPEGImages", i + ".png"), sample.image)
            atomic_write_bytes(os.path.join(tmp, "Annotations", i + ".xml"), _voc_xml(i, sample, class_names))
        if split is not None:
            atomic_write_text(os.path.join(tmp, "ImageSets", "Main", f"{split}.txt"), "".join(i + "\n" for i in ids))


def write_coco(samples, class_names, annotations_json, image_dir):
    """Write the images into the new folder ``image_dir`` and a COCO instances file ``annotations_json``
    (category ids 1, 2, ... in class order; difficult objects as ``iscrowd``)."""
    ids = _ids(samples)
    images, annotations = [], []
    with _new_folder(image_dir) as tmp:
        for n, (i, sample) in enumerate(zip(ids, samples)):
            _write_png(os.path.join(tmp, i + ".png"), sample.image)
            height, width = sample.image.shape[:2]
            images.append({"id": n + 1, "file_name": i + ".png", "width": width, "height": height})
            for (x0, y0, x1, y1), cls, difficult in _objects(sample, class_names, n):
                annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": cls + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "iscrowd": int(difficult)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    atomic_write_text(annotations_json, json.dumps({"images": images, "annotations": annotations,
                                                    "categories": categories}))


def write_tfrecord(samples, class_names, path):
    """Write ``samples`` as one TFRecord file of TF Object Detection API Examples (labels 1-based)."""
    path = os.fspath(path)
    examples = [_od_example(i, sample, class_names).SerializeToString()
                for i, sample in zip(_ids(samples), samples)]
    # TFRecordWriter frames the records (lengths, CRCs) into a file of its own: write it aside, then move the
    # bytes into place atomically.
    with tempfile.TemporaryDirectory() as scratch:
        with tf.io.TFRecordWriter(os.path.join(scratch, "records")) as writer:
            for example in examples:
                writer.write(example)
        atomic_write_bytes(path, read_bytes(os.path.join(scratch, "records")))


# --- helpers -------------------------------------------------------------------------------

def _ids(samples):
    if not samples:
        raise TinyVisionError("no samples to write")
    return [f"{n:06d}" for n in range(len(samples))]


def _objects(sample, class_names, number):
    """[((x0, y0, x1, y1) floats, class, difficult)] of sample ``number``, its classes checked against class_names."""
    record = formats.annotated(sample)
    bad = [int(c) for c in record.classes if not 0 <= c < len(class_names)]
    if bad:
        raise TinyVisionError(f"sample {number}: class {bad[0]} is not an index into the {len(class_names)} "
                              f"class names")
    return [(tuple(float(v) for v in box), int(c), bool(d))
            for box, c, d in zip(record.boxes, record.classes, record.difficult)]


def _write_png(path, image):
    atomic_write_bytes(path, tf.io.encode_png(np.asarray(image, np.uint8)).numpy())


def _voc_xml(image_id, sample, class_names):
    height, width, depth = sample.image.shape
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = image_id + ".png"
    size = ElementTree.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", depth)):
        ElementTree.SubElement(size, key).text = str(value)
    for (x0, y0, x1, y1), cls, difficult in _objects(sample, class_names, int(image_id)):
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = class_names[cls]
        ElementTree.SubElement(obj, "difficult").text = str(int(difficult))
        box = ElementTree.SubElement(obj, "bndbox")
        # 0-based edges -> 1-based inclusive pixel indices.
        for key, value in (("xmin", round(x0) + 1), ("ymin", round(y0) + 1), ("xmax", round(x1)), ("ymax", round(y1))):
            ElementTree.SubElement(box, key).text = str(value)
    return ElementTree.tostring(root, encoding="utf-8")


def _od_example(image_id, sample, class_names):
    height, width = sample.image.shape[:2]
    objects = _objects(sample, class_names, int(image_id))
    boxes = np.array([box for box, _, _ in objects], np.float64).reshape(-1, 4) / [width, height, width, height]
    floats = {key: boxes[:, column] for column, key in
              enumerate((formats.OD_XMIN, formats.OD_YMIN, formats.OD_XMAX, formats.OD_YMAX))}
    ints = {formats.OD_HEIGHT: [height], formats.OD_WIDTH: [width],
            formats.OD_LABEL: [cls + 1 for _, cls, _ in objects],
            formats.OD_DIFFICULT: [int(d) for _, _, d in objects]}
    strings = {formats.OD_IMAGE: [tf.io.encode_png(np.asarray(sample.image, np.uint8)).numpy()],
               formats.OD_FILENAME: [(image_id + ".png").encode("utf-8")],
               formats.OD_TEXT: [class_names[cls].encode("utf-8") for _, cls, _ in objects]}
    feature = {**{k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in floats.items()},
               **{k: tf.train.Feature(int64_list=tf.train.Int64List(value=v)) for k, v in ints.items()},
               **{k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)) for k, v in strings.items()}}
    return tf.train.Example(features=tf.train.Features(feature=feature))


class _new_folder:
    """Context manager: a temporary folder beside ``target``, renamed to ``target`` when the block succeeds
    (``target`` must not exist or be empty), removed when it fails."""

    def __init__(self, target):
        self.target = os.path.abspath(os.fspath(target))

    def __enter__(self):
        if os.path.isdir(self.target) and os.listdir(self.target):
            raise TinyVisionError(f"{self.target} already holds files: write into a new folder")
        if os.path.exists(self.target) and not os.path.isdir(self.target):
            raise TinyVisionError(f"{self.target} is a file, not a folder")
        parent = os.path.dirname(self.target)
        try:
            os.makedirs(parent, exist_ok=True)
            self.tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(self.target)}.tmp-")
            os.chmod(self.tmp, 0o755)  # mkdtemp's 0700 would make the data set private
        except OSError as e:
            raise TinyVisionError(f"cannot write {self.target}: {e.strerror or e}") from None
        return self.tmp

    def __exit__(self, kind, value, traceback):
        if kind is None:
            if os.path.isdir(self.target):
                os.rmdir(self.target)  # empty, checked on entry
            os.replace(self.tmp, self.target)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
