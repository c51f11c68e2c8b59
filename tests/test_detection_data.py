"""Annotated detection data on disk: the built-in scenes round-tripped through VOC, COCO and TFRecord files,
VOC's 1-based coordinates, bad input refused in one line, and augmentation moving boxes with the pixels."""
import json
import os

import numpy as np
import pytest

from tinyvision.data.detection import DETECTION_CLASSES, detection_samples
from tinyvision.data.detection_augment import augment, crop, flip_horizontal, resize
from tinyvision.data.detection_formats import AnnotatedImage, annotated, load_coco, load_tfrecord, load_voc
from tinyvision.data.detection_writers import write_coco, write_tfrecord, write_voc
from tinyvision.errors import TinyVisionError


@pytest.fixture(scope="module")
def scenes():
    """Six built-in scenes (about 15 objects), the second object of each scene marked difficult."""
    samples = [annotated(s) for s in detection_samples(6, resolution=64, seed=4)]
    for s in samples:
        s.difficult[1:2] = True
    assert sum(len(s.classes) for s in samples) >= 10 and any(s.difficult.any() for s in samples)
    return samples


def _same_annotations(loaded, samples, atol):
    assert len(loaded) == len(samples)
    for got, want in zip(loaded, samples):
        np.testing.assert_array_equal(got.image, want.image)  # PNG: lossless
        np.testing.assert_allclose(got.boxes, want.boxes, atol=atol)
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.difficult, want.difficult)
        assert got.boxes.dtype == np.float32 and got.classes.dtype == np.int32 and got.image.dtype == np.uint8


def _refused(call, *fragments):
    with pytest.raises(TinyVisionError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def _write_png(path, image):
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())


# --- round trips --------------------------------------------------------------------------------

def test_voc_round_trip(scenes, tmp_path):
    write_voc(scenes, DETECTION_CLASSES, tmp_path / "voc", split="val")
    loaded, names = load_voc(tmp_path / "voc", split="val")
    assert names == DETECTION_CLASSES  # sorted names of the classes present: the same order here
    _same_annotations(loaded, scenes, atol=0.5)  # VOC stores whole pixels
    # Without a split: every annotation file, in id order; with class names given: their order.
    again, names = load_voc(tmp_path / "voc", class_names=("triangle", "square", "circle", "star"))
    assert names == ("triangle", "square", "circle", "star")
    np.testing.assert_array_equal(np.concatenate([r.classes for r in again]),
                                  2 - np.concatenate([s.classes for s in scenes]))


def test_coco_round_trip(scenes, tmp_path):
    write_coco(scenes, DETECTION_CLASSES, tmp_path / "instances.json", tmp_path / "images")
    loaded, names = load_coco(tmp_path / "instances.json", tmp_path / "images")
    assert names == DETECTION_CLASSES
    _same_annotations(loaded, scenes, atol=1e-4)
    data = json.loads((tmp_path / "instances.json").read_text())
    crowd = [a["iscrowd"] for a in data["annotations"]]
    assert sum(crowd) == sum(int(s.difficult.sum()) for s in scenes)


def test_tfrecord_round_trip(scenes, tmp_path):
    path = tmp_path / "scenes.tfrecord"
    write_tfrecord(scenes, DETECTION_CLASSES, path)
    loaded, names = load_tfrecord(str(path))
    assert names == DETECTION_CLASSES  # from image/object/class/text
    _same_annotations(loaded, scenes, atol=1e-3)
    renamed, names = load_tfrecord([str(path)], class_names=("a", "b", "c", "d"))
    assert names == ("a", "b", "c", "d")
    _same_annotations(renamed, scenes, atol=1e-3)


def test_voc_coordinates_are_one_based_inclusive(tmp_path):
    _write_png(str(tmp_path / "JPEGImages" / "a.png"), np.zeros((6, 8, 3), np.uint8))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.png</filename>"
        "<object><name>dot</name><difficult>1</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object>"
        "<object><name>all</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>6</ymax></bndbox></object></annotation>")
    (record,), names = load_voc(tmp_path)
    # The top-left pixel alone, then the whole 8 x 6 image.
    np.testing.assert_array_equal(record.boxes, [[0, 0, 1, 1], [0, 0, 8, 6]])
    assert names == ("all", "dot") and record.classes.tolist() == [1, 0] and record.difficult.tolist() == [True, False]


# --- bad input -----------------------------------------------------------------------------------

def test_bad_voc_input_is_refused_in_one_line(scenes, tmp_path):
    _refused(lambda: load_voc(tmp_path / "nowhere"), "nowhere", "does not exist")
    write_voc(scenes[:2], DETECTION_CLASSES, tmp_path / "voc")
    _refused(lambda: load_voc(tmp_path / "voc", split="test"), "test.txt")
    _refused(lambda: load_voc(tmp_path / "voc", class_names=("circle", "square")), "unknown class 'triangle'",
             ".xml")
    xml = tmp_path / "voc" / "Annotations" / "000001.xml"
    text = xml.read_text()
    xml.write_text(text[:-20])
    _refused(lambda: load_voc(tmp_path / "voc"), "000001.xml", "malformed XML")
    xml.write_text(text.replace("<xmax>", "<xmax>9", 1))  # a box reaching past the 64-pixel image
    _refused(lambda: load_voc(tmp_path / "voc"), "000001.xml", "outside the 64 x 64 image")
    xml.write_text(text.replace("<xmin>", "<xmin>x", 1))
    _refused(lambda: load_voc(tmp_path / "voc"), "000001.xml", "numeric <bndbox>")
    xml.write_text(text)
    os.remove(tmp_path / "voc" / "JPEGImages" / "000001.png")
    _refused(lambda: load_voc(tmp_path / "voc"), "cannot read image", "000001.png")


def test_bad_coco_input_is_refused_in_one_line(scenes, tmp_path):
    write_coco(scenes[:2], DETECTION_CLASSES, tmp_path / "c.json", tmp_path / "images")
    _refused(lambda: load_coco(tmp_path / "c.json", tmp_path / "elsewhere"), "elsewhere", "does not exist")
    _refused(lambda: load_coco(tmp_path / "missing.json", tmp_path / "images"), "missing.json")
    good = json.loads((tmp_path / "c.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text("{\"images\": [")
    _refused(lambda: load_coco(bad, tmp_path / "images"), "bad.json", "malformed JSON")
    bad.write_text(json.dumps({"images": good["images"]}))
    _refused(lambda: load_coco(bad, tmp_path / "images"), "bad.json", "not a COCO instances file")
    for change, fragment in (({"category_id": 9}, "category_id 9"), ({"image_id": 7}, "image_id 7"),
                             ({"bbox": [50, 10, 20, 5]}, "outside the 64 x 64 image"),
                             ({"bbox": [5, 5, 0, 3]}, "empty box")):
        data = json.loads(json.dumps(good))
        data["annotations"][0].update(change)
        bad.write_text(json.dumps(data))
        _refused(lambda: load_coco(bad, tmp_path / "images"), "bad.json", fragment)
    # Up to a pixel over the edge is rounding: clipped.
    data = json.loads(json.dumps(good))
    data["annotations"][0]["bbox"] = [60, 0, 4.5, 3]
    bad.write_text(json.dumps(data))
    assert load_coco(bad, tmp_path / "images")[0][0].boxes[0].tolist() == [60, 0, 64, 3]


def test_bad_tfrecord_input_is_refused_in_one_line(scenes, tmp_path):
    import tensorflow as tf

    _refused(lambda: load_tfrecord(str(tmp_path / "none-*.tfrecord")), "none-*.tfrecord")
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    _refused(lambda: load_tfrecord(str(empty)), "empty.tfrecord", "no records")
    junk = tmp_path / "junk.tfrecord"
    junk.write_bytes(b"not a tfrecord file at all")
    _refused(lambda: load_tfrecord(str(junk)), "junk.tfrecord", "not a readable TFRecord")
    path = tmp_path / "s.tfrecord"
    write_tfrecord(scenes[:2], DETECTION_CLASSES, path)
    _refused(lambda: load_tfrecord(str(path), class_names=("circle",)), "s.tfrecord record", "class label")
    with tf.io.TFRecordWriter(str(junk)) as writer:
        writer.write(b"\xff\xff")
    _refused(lambda: load_tfrecord(str(junk)), "junk.tfrecord record 0", "not a serialized tf.train.Example")


def test_writers_refuse_what_they_cannot_write(scenes, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    _refused(lambda: write_voc(scenes, DETECTION_CLASSES, tmp_path / "full"), "already holds files")
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    _refused(lambda: write_coco(scenes, DETECTION_CLASSES[:1], tmp_path / "c.json", tmp_path / "images"),
             "is not an index into the 1 class names")
    assert sorted(os.listdir(tmp_path)) == ["full"]  # nothing half-written
    _refused(lambda: write_tfrecord([], DETECTION_CLASSES, tmp_path / "e.tfrecord"), "no samples")


# --- augmentation ---------------------------------------------------------------------------------

def _rectangles(boxes, rows, cols):
    """A black image with a white rectangle on each (whole-pixel) box: the truth to follow boxes by."""
    image = np.zeros((rows, cols, 3), np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, int):
        image[y0:y1, x0:x1] = 255
    boxes = np.asarray(boxes, np.float32)
    return AnnotatedImage(image, boxes, np.arange(len(boxes), dtype=np.int32), np.zeros(len(boxes), bool), "test")


def _box_of_pixels(image, box, margin=2):
    """The box around the bright pixels near ``box`` (each rectangle of _rectangles stands apart)."""
    x0, y0, x1, y1 = np.round(box).astype(int)
    window = image[max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin, 0] > 127
    rows, cols = np.flatnonzero(window.any(1)), np.flatnonzero(window.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) + [max(x0 - margin, 0), max(y0 - margin, 0)] * 2


def test_flip_mirrors_boxes(scenes):
    sample = scenes[0]
    width = sample.image.shape[1]
    flipped = flip_horizontal(sample)
    np.testing.assert_array_equal(flipped.image, sample.image[:, ::-1])
    np.testing.assert_allclose(flipped.boxes[:, 0], width - sample.boxes[:, 2], atol=1e-5)
    np.testing.assert_allclose(flipped.boxes[:, 2], width - sample.boxes[:, 0], atol=1e-5)
    np.testing.assert_array_equal(flipped.boxes[:, [1, 3]], sample.boxes[:, [1, 3]])
    np.testing.assert_allclose(flip_horizontal(flipped).boxes, sample.boxes, atol=1e-5)


def test_crop_clips_boxes_and_drops_hidden_objects():
    sample = _rectangles([[2, 2, 12, 12], [30, 4, 40, 24], [44, 30, 60, 40]], 48, 64)
    cropped = crop(sample, 8, 0, 40, 30, min_visible=0.3)
    # Box 0 keeps 4 of its 10 columns (40%); box 1 lies wholly inside; box 2 is outside the window.
    np.testing.assert_array_equal(cropped.boxes, [[0, 2, 4, 12], [22, 4, 32, 24]])
    assert cropped.classes.tolist() == [0, 1] and cropped.image.shape == (30, 40, 3)
    assert crop(sample, 8, 0, 40, 30, min_visible=0.5).classes.tolist() == [1]
    _refused(lambda: crop(sample, 30, 0, 40, 30), "not inside the 64 x 48 image")


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_resize_keeps_boxes_on_their_objects(mode):
    sample = _rectangles([[4, 4, 20, 16], [40, 20, 60, 44]], 48, 64)
    fitted = resize(sample, 32, mode)
    assert fitted.image.shape == (32, 32, 3)
    # stretch: x halved, y by 32 / 48; letterbox: both halved (64 x 48 -> 32 x 24), 4 rows down.
    scale, offset = ([0.5, 32 / 48] * 2, 0) if mode == "stretch" else (0.5, [0, 4] * 2)
    np.testing.assert_allclose(fitted.boxes, sample.boxes * scale + offset, atol=1e-5)
    for box in fitted.boxes:
        np.testing.assert_allclose(_box_of_pixels(fitted.image, box), box, atol=1)
    if mode == "letterbox":  # 64 x 48 -> 32 x 24, centred: 4 rows of fill above and below
        assert not fitted.image[:4].any() and not fitted.image[-4:].any()


def test_augment_is_seeded_and_moves_boxes_with_the_pixels():
    sample = _rectangles([[6, 6, 22, 20], [36, 8, 56, 30], [10, 32, 26, 44]], 48, 64)
    first, again = augment(sample, 40, seed=11), augment(sample, 40, seed=11)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    outcomes = [augment(sample, 40, seed=s, min_scale=0.6, mode=m) for s in range(12) for m in ("letterbox", "stretch")]
    assert len({o.boxes.tobytes() for o in outcomes}) > 12
    mirrored = []
    for out in outcomes:
        assert out.image.shape == (40, 40, 3) and len(out.classes) >= 1
        for box in out.boxes:
            np.testing.assert_allclose(_box_of_pixels(out.image, box), box, atol=1.5)
        if {0, 1} <= set(out.classes.tolist()):  # rectangle 0 lies left of rectangle 1 unless mirrored
            centre = {int(c): (b[0] + b[2]) / 2 for b, c in zip(out.boxes, out.classes)}
            mirrored.append(centre[0] > centre[1])
    assert any(mirrored) and not all(mirrored)
    _refused(lambda: augment(sample, 40, seed=0, mode="pad"), "letterbox, stretch")


def test_augmented_training_data_moves_the_targets_with_the_pixels():
    """Box training's data (converters.cli.box_data.augmented_training_data): every record once per epoch, a new
    flip and crop each epoch, and the targets decode to boxes on the rectangles of the image they go with."""
    from converters.cli.box_data import augmented_training_data
    from tinyvision.data.normalization import denormalize
    from tinyvision.detection import BoxCoding

    records = [_rectangles([[4 + 2 * i, 6, 20 + 2 * i, 22], [34, 30 - i, 54, 50 - i]], 64, 64) for i in range(4)]
    coding = BoxCoding(((16.0, 16.0), (24.0, 24.0)), classes=2, stride=16)
    data = augmented_training_data(records, coding, (4, 4), 64, seed=3)
    assert int(data.cardinality()) == 4
    epochs = [[(denormalize(x.numpy()), y.numpy()) for x, y in data] for _ in range(2)]
    assert all(len(e) == 4 for e in epochs)
    assert {image.tobytes() for image, _ in epochs[0]} != {image.tobytes() for image, _ in epochs[1]}
    found = 0
    for image, targets in epochs[0] + epochs[1]:
        assert image.shape == (64, 64, 3) and targets.shape == (4, 4, 2 * (5 + 2))
        for box in coding.decode(targets, threshold=0.5):
            np.testing.assert_allclose(_box_of_pixels(image, box.box), box.box, atol=1.5)
            found += 1
    assert found >= 8
