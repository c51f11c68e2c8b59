"""Loaders for annotated detection data on disk: Pascal VOC folders, COCO instances JSON, and TFRecords in the
TensorFlow Object Detection API layout.

Each loader returns ``(records, class_names)``: a list of :class:`AnnotatedImage` (the image decoded with
``tf.io.decode_image``: uint8 [H, W, 3]; boxes float32 [n, 4] (x0, y0, x1, y1) in continuous pixel
coordinates, 0-based, x1 / y1 the far edges, so width = x1 - x0; classes int32 [n], indices into
``class_names``; difficult bool [n]) and the class names as a tuple. Every image is decoded up front.

How each format's coordinates map onto that convention:

- VOC: ``xmin .. xmax`` are 1-based inclusive pixel indices, so ``x0 = xmin - 1``, ``x1 = xmax`` (a box
  covering pixel 1 alone, ``xmin = xmax = 1``, is ``0 .. 1``).
- COCO: ``bbox = [x, y, w, h]`` already continuous and 0-based: ``x0 = x``, ``x1 = x + w``.
- TF Object Detection API: ``xmin, xmax, ymin, ymax`` normalised by the image size: ``x0 = xmin * W``.

A box may stick out of its image by up to :data:`BOX_TOLERANCE` pixels (annotation tools round) and is
then clipped; one further out, an empty box, an unknown class, a missing file or a malformed annotation
raises TinyVisionError naming the file and the cause.
"""
import dataclasses
import json
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.data.detection import DetectionSample
from tinyvision.data.loaders import _expand
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import read_bytes

BOX_TOLERANCE = 1.0  # pixels a box may exceed its image by before it is refused

# TF Object Detection API feature keys.
OD_IMAGE = "image/encoded"
OD_HEIGHT = "image/height"
OD_WIDTH = "image/width"
OD_FILENAME = "image/filename"
OD_XMIN, OD_XMAX = "image/object/bbox/xmin", "image/object/bbox/xmax"
OD_YMIN, OD_YMAX = "image/object/bbox/ymin", "image/object/bbox/ymax"
OD_LABEL = "image/object/class/label"
OD_TEXT = "image/object/class/text"
OD_DIFFICULT = "image/object/difficult"


@dataclasses.dataclass(frozen=True)
class AnnotatedImage(DetectionSample):
    """A DetectionSample of any size from a file: image uint8 [H, W, 3]; boxes float32 [n, 4] (x0, y0, x1, y1)
    pixels; classes int32 [n]; difficult bool [n] (objects the metrics neither count nor miss); source: where
    it came from (file name or record)."""

    difficult: np.ndarray
    source: str = ""


def annotated(sample, source=""):
    """``sample`` (a DetectionSample or AnnotatedImage) as an AnnotatedImage (difficult: none, if it has no flags)."""
    difficult = getattr(sample, "difficult", np.zeros(len(sample.classes), bool))
    return AnnotatedImage(sample.image, sample.boxes, sample.classes, difficult, getattr(sample, "source", source))


def load_voc(root, split=None, class_names=None):
    """A Pascal VOC folder -> (records, class names).

    ``root`` holds ``Annotations/<id>.xml`` and the images in ``JPEGImages/`` (the file each XML's
    ``<filename>`` names, ``<id>.jpg`` without one). ``split``: read the ids in ``ImageSets/Main/<split>.txt``
    (else every XML, sorted). ``class_names``: the classes in index order (an object of another class is an
    error); default: every name in the annotations, sorted.
    """
    root = os.fspath(root)
    annotations = _existing_folder(os.path.join(root, "Annotations"), "VOC annotations folder")
    ids = _voc_ids(root, annotations, split)
    parsed = [_parse_voc_xml(os.path.join(annotations, i + ".xml"), i) for i in ids]
    if class_names is None:
        class_names = sorted({name for _, objects in parsed for name, _, _ in objects})
    index = {name: i for i, name in enumerate(class_names)}
    records = []
    for (filename, objects), i in zip(parsed, ids):
        where = os.path.join(annotations, i + ".xml")
        image = _decode(os.path.join(root, "JPEGImages", filename))
        boxes = np.array([box for _, box, _ in objects], np.float64).reshape(-1, 4)
        boxes[:, :2] -= 1  # 1-based inclusive pixel indices -> 0-based edges
        records.append(_record(image, boxes, [_class_index(index, name, where) for name, _, _ in objects],
                               [difficult for _, _, difficult in objects], where))
    return records, tuple(class_names)


def load_coco(annotations_json, image_dir):
    """A COCO instances JSON and its image folder -> (records, class names).

    Category ids become indices 0, 1, ... in increasing id order; ``iscrowd`` objects are difficult.
    Records come in the order of the JSON's ``images``.
    """
    annotations_json = os.fspath(annotations_json)
    _existing_folder(image_dir, "COCO image folder")
    data = _read_json(annotations_json)
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        images = [(int(im["id"]), str(im["file_name"])) for im in data["images"]]
        objects = {image_id: [] for image_id, _ in images}
        index = {cid: i for i, (cid, _) in enumerate(categories)}
        for a in data["annotations"]:
            where = f"{annotations_json} annotation {a.get('id', '?')}"
            x, y, w, h = (float(v) for v in a["bbox"])
            box = [x, y, x + w, y + h]
            if int(a["image_id"]) not in objects:
                raise TinyVisionError(f"{where}: image_id {a['image_id']} is not in 'images'")
            if int(a["category_id"]) not in index:
                raise TinyVisionError(f"{where}: category_id {a['category_id']} is not in 'categories'")
            objects[int(a["image_id"])].append((box, index[int(a["category_id"])], bool(a.get("iscrowd", 0))))
    except (KeyError, TypeError, ValueError) as e:
        raise TinyVisionError(f"{annotations_json}: not a COCO instances file ({type(e).__name__}: {e})") from None
    records = []
    for image_id, filename in images:
        found = objects[image_id]
        records.append(_record(_decode(os.path.join(image_dir, filename)), [box for box, _, _ in found],
                               [cls for _, cls, _ in found], [crowd for _, _, crowd in found],
                               f"{annotations_json} image {image_id} ({filename})"))
    return records, tuple(name for _, name in categories)


def load_tfrecord(paths, class_names=None):
    """TFRecord files of tf.train.Example in the TF Object Detection API layout -> (records, class names).

    ``paths``: a file, a folder, a glob or a list of those. Labels are 1-based (0 is the API's background):
    label L is class index L - 1. ``class_names`` default: from ``image/object/class/text``, which must then
    name every label from 1 to the highest.
    """
    parsed = []
    for path in _expand(paths):
        try:
            for n, raw in enumerate(tf.data.TFRecordDataset(path)):
                parsed.append(_parse_od_example(raw.numpy(), f"{path} record {n}"))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise TinyVisionError(f"{path}: not a readable TFRecord file ({e.message.splitlines()[0]})") from None
    if not parsed:
        raise TinyVisionError(f"{paths}: no records")
    if class_names is None:
        class_names = _names_from_texts(parsed, paths)
    records = []
    for image, boxes, labels, _, difficult, where in parsed:
        bad = [int(v) for v in labels if not 1 <= v <= len(class_names)]
        if bad:
            raise TinyVisionError(f"{where}: class label {bad[0]} is not one of 1 .. {len(class_names)}")
        records.append(_record(image, boxes, np.asarray(labels) - 1, difficult, where))
    return records, tuple(class_names)


# --- VOC -----------------------------------------------------------------------------------

def _voc_ids(root, annotations, split):
    if split is None:
        ids = sorted(f[:-4] for f in os.listdir(annotations) if f.endswith(".xml"))
        if not ids:
            raise TinyVisionError(f"VOC annotations folder {annotations} has no .xml files")
        return ids
    listing = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    # A line may carry a second column (the per-class lists' 1 / -1 / 0 flags): the id is the first word.
    ids = [line.split()[0] for line in read_bytes(listing, "VOC split").decode("utf-8").splitlines() if line.strip()]
    if not ids:
        raise TinyVisionError(f"VOC split {listing} lists no images")
    return ids


def _parse_voc_xml(path, image_id):
    """(image file name, [(class name, [xmin, ymin, xmax, ymax] as written, difficult)]) of one VOC XML."""
    try:
        tree = ElementTree.fromstring(read_bytes(path, "VOC annotation"))
    except ElementTree.ParseError as e:
        raise TinyVisionError(f"{path}: malformed XML ({e})") from None
    objects = []
    for obj in tree.findall("object"):
        box = obj.find("bndbox")
        try:
            name = obj.find("name").text.strip()
            coordinates = [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            difficult = obj.find("difficult") is not None and int(obj.find("difficult").text) == 1
        except (AttributeError, ValueError, TypeError):
            raise TinyVisionError(f"{path}: an <object> without a <name> and numeric <bndbox> "
                                  f"xmin / ymin / xmax / ymax") from None
        objects.append((name, coordinates, difficult))
    filename = tree.findtext("filename")
    return (filename.strip() if filename and filename.strip() else image_id + ".jpg"), objects


# --- COCO ----------------------------------------------------------------------------------

def _read_json(path):
    try:
        return json.loads(read_bytes(path, "COCO annotations"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyVisionError(f"{path}: malformed JSON ({e})") from None


# --- TF Object Detection API ---------------------------------------------------------------

def _parse_od_example(raw, where):
    """(image, boxes [n, 4] pixels, labels [n], texts [n], difficult [n], where) of one serialized Example."""
    try:
        feature = tf.train.Example.FromString(raw).features.feature
    except Exception:  # protobuf raises its own DecodeError type  # noqa: BLE001
        raise TinyVisionError(f"{where}: not a serialized tf.train.Example") from None
    if OD_IMAGE not in feature or len(feature[OD_IMAGE].bytes_list.value) != 1:
        raise TinyVisionError(f"{where}: no '{OD_IMAGE}' image")
    image = _decode_bytes(feature[OD_IMAGE].bytes_list.value[0], where)
    height, width = (_one_int(feature, key, where) for key in (OD_HEIGHT, OD_WIDTH))
    if (height, width) != image.shape[:2]:
        raise TinyVisionError(f"{where}: {OD_HEIGHT} / {OD_WIDTH} say {height} x {width}, the image is "
                              f"{image.shape[0]} x {image.shape[1]}")
    columns = [list(feature[k].float_list.value) for k in (OD_XMIN, OD_YMIN, OD_XMAX, OD_YMAX)]
    labels = list(feature[OD_LABEL].int64_list.value)
    texts = [t.decode("utf-8") for t in feature[OD_TEXT].bytes_list.value]
    difficult = list(feature[OD_DIFFICULT].int64_list.value) or [0] * len(labels)
    if len({len(c) for c in columns} | {len(labels), len(difficult)} | ({len(texts)} if texts else set())) != 1:
        raise TinyVisionError(f"{where}: the image/object/* features have different lengths")
    boxes = np.array(columns, np.float64).T.reshape(-1, 4) * [width, height, width, height]
    return image, boxes, labels, texts, np.asarray(difficult, bool), where


def _one_int(feature, key, where):
    if key not in feature or len(feature[key].int64_list.value) != 1:
        raise TinyVisionError(f"{where}: no '{key}' (one int64)")
    return int(feature[key].int64_list.value[0])


def _names_from_texts(parsed, paths):
    """Class names indexed by label - 1, from the records' label / text pairs."""
    names = {}
    for _, _, labels, texts, _, where in parsed:
        for label, text in zip(labels, texts):
            if names.setdefault(label, text) != text:
                raise TinyVisionError(f"{where}: label {label} is '{text}' here and '{names[label]}' before")
    if not names:
        raise TinyVisionError(f"{paths}: no '{OD_TEXT}' to name the classes: pass class_names")
    missing = sorted(set(range(1, max(names) + 1)) - set(names))
    if missing or min(names) < 1:
        raise TinyVisionError(f"{paths}: labels {sorted(names)} do not run 1 .. {max(names)} with a "
                              f"'{OD_TEXT}' each: pass class_names")
    return [names[label] for label in range(1, max(names) + 1)]


# --- shared --------------------------------------------------------------------------------

def _existing_folder(path, what):
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise TinyVisionError(f"{what} {path} does not exist" if not os.path.exists(path) else
                              f"{what} {path} is not a folder")
    return path


def _decode(path):
    return _decode_bytes(read_bytes(path, "image"), path)


def _decode_bytes(encoded, where):
    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        raise TinyVisionError(f"{where}: not a decodable JPEG/PNG image") from None


def _class_index(index, name, where):
    if name not in index:
        raise TinyVisionError(f"{where}: unknown class '{name}' (classes: {', '.join(index)})")
    return index[name]


def _record(image, boxes, classes, difficult, where):
    """An AnnotatedImage, its boxes checked against the image (clipped within BOX_TOLERANCE)."""
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for x0, y0, x1, y1 in boxes:
        if not (x1 > x0 and y1 > y0):
            raise TinyVisionError(f"{where}: empty box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) (x0, y0, x1, y1 pixels)")
        if min(x0, y0) < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
            raise TinyVisionError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                                  f"{width} x {height} image")
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return AnnotatedImage(image, boxes, np.asarray(classes, np.int32).reshape(-1),
                          np.asarray(difficult, bool).reshape(-1), where)
