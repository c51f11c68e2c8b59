"""The built-in procedural dataset and the folder / TFRecord loaders (real TF, files made in tmp_path)."""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf

from tinyvision.data import (NORMALIZATION, SHAPE_CLASSES, VWW_CLASSES, class_names, denormalize,
                             image_folder_dataset, make_example, normalize, synthetic_arrays, synthetic_dataset,
                             synthetic_pixels, tfrecord_dataset)
from tinyvision.errors import TinyVisionError


# --- built-in dataset ------------------------------------------------------------------------

def test_same_seed_same_data_other_seed_or_split_different():
    x1, y1 = synthetic_arrays(16, 32, seed=3)
    x2, y2 = synthetic_arrays(16, 32, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    other_seed, _ = synthetic_arrays(16, 32, seed=4)
    other_split, _ = synthetic_arrays(16, 32, seed=3, split="val")
    for other in (other_seed, other_split):
        # Every image differs, not just some: the seed reaches every sample.
        assert all(np.abs(a - b).mean() > 0.05 for a, b in zip(x1, other))


def test_samples_are_random_access():
    """Sample i is the same whatever the batch it is drawn in, and in the tf.data pipeline."""
    x, y = synthetic_arrays(12, 24, seed=5)
    part, part_labels = synthetic_arrays(4, 24, seed=5, start=8)
    np.testing.assert_array_equal(part, x[8:])
    np.testing.assert_array_equal(part_labels, y[8:])
    ds = synthetic_dataset(12, 24, seed=5, batch_size=5)
    images = np.concatenate([b[0].numpy() for b in ds])
    labels = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_shuffled_dataset_is_a_permutation():
    x, y = synthetic_arrays(16, 16, seed=2)
    images, labels = zip(*[(a.numpy(), b.numpy()) for a, b in synthetic_dataset(16, 16, seed=2, batch_size=None,
                                                                                  shuffle=True)])
    assert sorted(labels) == sorted(y.tolist())
    order = [int(np.argmin(np.abs(x - image).sum(axis=(1, 2, 3)))) for image in images]
    assert sorted(order) == list(range(16)) and order != list(range(16))


@pytest.mark.parametrize("resolution", [8, 33, 64])
def test_shapes_dtype_range_and_balance(resolution):
    x, y = synthetic_arrays(40, resolution, seed=0)
    assert x.shape == (40, resolution, resolution, 3) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.2
    np.testing.assert_array_equal(np.bincount(y, minlength=8), [5] * 8)


def test_values_are_normalized_uint8_pixels():
    pixels, labels = synthetic_pixels(4, 16, seed=1)
    assert pixels.dtype == np.uint8
    x, y = synthetic_arrays(4, 16, seed=1)
    np.testing.assert_array_equal(x, (pixels.astype(np.float32) - 127.5) / 127.5)
    np.testing.assert_array_equal(denormalize(x), pixels)
    np.testing.assert_array_equal(y, labels)
    assert NORMALIZATION == (127.5, 127.5)
    np.testing.assert_allclose(normalize(np.array([0, 255])), [-1.0, 1.0])


def test_scene_is_resolution_independent():
    """The same seed draws the same scene at any resolution (a 2x2 box filter of 64 px ~ 32 px)."""
    small, _ = synthetic_pixels(4, 32, seed=7)
    large, _ = synthetic_pixels(4, 64, seed=7)
    pooled = large.astype(np.float32).reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(pooled - small).mean() < 12  # pixel noise and edge anti-aliasing differ
    assert np.abs(pooled - np.roll(small, 1, axis=0)).mean() > 30


def test_not_solvable_by_a_pixel_template():
    """Random position, rotation and colours: a nearest-class-mean classifier on raw pixels stays near chance."""
    x, y = synthetic_arrays(800, 16, seed=0)
    xv, yv = synthetic_arrays(400, 16, seed=0, split="val")
    means = np.stack([x[y == c].reshape(-1, 16 * 16 * 3).mean(axis=0) for c in range(8)])
    distances = ((xv.reshape(len(xv), 1, -1) - means[None]) ** 2).sum(axis=-1)
    accuracy = (distances.argmin(axis=1) == yv).mean()
    assert accuracy < 0.3  # chance is 0.125


def test_vww_variant_and_class_subsets():
    x, y = synthetic_arrays(20, 32, seed=0, variant="vww")
    assert class_names("vww") == VWW_CLASSES == ("no_person", "person")
    np.testing.assert_array_equal(np.bincount(y), [10, 10])
    assert x.shape == (20, 32, 32, 3)
    xs, ys = synthetic_arrays(6, 16, classes=("circle", "person"))
    assert ys.tolist() == [0, 1, 0, 1, 0, 1]
    assert class_names() == SHAPE_CLASSES and len(SHAPE_CLASSES) == 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="digits"), "unknown synthetic variant"),
    (dict(split="holdout"), "unknown split"),
    (dict(resolution=4), "resolution"),
    (dict(num_samples=0), "num_samples"),
    (dict(classes=("circle", "hexagon")), "classes"),
    (dict(classes=("circle",)), "classes"),
    (dict(variant="vww", classes=("circle", "square")), "fixed classes"),
])
def test_bad_synthetic_arguments(kwargs, message):
    args = dict(num_samples=4, resolution=16) | kwargs
    with pytest.raises(TinyVisionError, match=message):
        synthetic_arrays(**args)


# --- folder loader ---------------------------------------------------------------------------

def _write_image(path, colour, size, fmt):
    image = np.broadcast_to(np.asarray(colour, np.uint8), (*size, 3))
    encoded = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image, quality=100)
    path.write_bytes(encoded.numpy())


def test_image_folder_dataset(tmp_path):
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        _write_image(tmp_path / name / "a.png", colour, (20, 30), "png")
        _write_image(tmp_path / name / "b.JPG", colour, (40, 24), "jpg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds, names = image_folder_dataset(tmp_path, 16, batch_size=3)
    assert names == ["cat", "dog"]
    batches = list(ds)
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32
    assert labels.tolist() == [0, 0, 1, 1]
    # Solid colours survive decode + resize + normalization (JPEG within a few levels).
    for image, label in zip(images, labels):
        expected = normalize(np.asarray(colours[names[label]]))
        np.testing.assert_allclose(image.mean(axis=(0, 1)), expected, atol=4 / 127.5)


def test_image_folder_errors(tmp_path):
    with pytest.raises(TinyVisionError, match="does not exist"):
        image_folder_dataset(tmp_path / "missing", 16)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(TinyVisionError, match="not a folder"):
        image_folder_dataset(tmp_path / "file.png", 16)
    with pytest.raises(TinyVisionError, match="no class sub-folders"):
        image_folder_dataset(tmp_path, 16)
    (tmp_path / "a").mkdir()
    with pytest.raises(TinyVisionError, match="has no .jpg"):
        image_folder_dataset(tmp_path, 16)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(TinyVisionError, match="not a decodable"):
        image_folder_dataset(tmp_path, 16)


# --- TFRecord loader -------------------------------------------------------------------------

def _png(colour, size=(12, 12)):
    return tf.io.encode_png(np.broadcast_to(np.asarray(colour, np.uint8), (*size, 3))).numpy()


def _write_records(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def test_tfrecord_dataset(tmp_path):
    # One file written with our helper, one with a hand-built Example: the usual key convention.
    _write_records(tmp_path / "train-0.tfrecord", [make_example(_png((0, 0, 0)), 1).SerializeToString(),
                                                   make_example(_png((255, 255, 255)), 2).SerializeToString()])
    manual = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png((255, 0, 0), (8, 20))])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[8])),
    }))
    _write_records(tmp_path / "train-1.tfrecord", [manual.SerializeToString()])

    for paths in (str(tmp_path / "train-*.tfrecord"), tmp_path, [tmp_path / "train-0.tfrecord",
                                                                  tmp_path / "train-1.tfrecord"]):
        ds = tfrecord_dataset(paths, 8, batch_size=None, label_offset=1)
        samples = [(image.numpy(), int(label)) for image, label in ds]
        assert sorted(label for _, label in samples) == [0, 1, 2]
        for image, label in samples:
            assert image.shape == (8, 8, 3) and image.dtype == np.float32
            expected = normalize(np.asarray([(0, 0, 0), (255, 255, 255), (255, 0, 0)][label]))
            np.testing.assert_allclose(image.mean(axis=(0, 1)), expected, atol=1e-5)
    batch = next(iter(tfrecord_dataset(tmp_path, 8, batch_size=2, shuffle=True, seed=1)))
    assert batch[0].shape == (2, 8, 8, 3) and batch[1].dtype == tf.int32


def test_tfrecord_errors(tmp_path):
    with pytest.raises(TinyVisionError, match="no TFRecord files"):
        tfrecord_dataset(tmp_path / "missing-*.tfrecord", 8)
    with pytest.raises(TinyVisionError, match="no TFRecord files"):
        tfrecord_dataset(tmp_path / "missing.tfrecord", 8)
    with pytest.raises(TinyVisionError, match="folder .* is empty"):
        tfrecord_dataset(tmp_path, 8)
    cases = {
        "empty.tfrecord": (None, "contains no records"),
        "garbage.tfrecord": (b"this is not a TFRecord file at all", "not a readable TFRecord"),
        "not_example.tfrecord": ([b"\xff\xff\xff"], "not a serialized tf.train.Example"),
        "no_label.tfrecord": ([tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png((1, 2, 3))]))
        })).SerializeToString()], "image/class/label"),
        "bad_image.tfrecord": ([make_example(b"no image here", 0).SerializeToString()], "not a decodable"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None or isinstance(content, list):
            _write_records(path, content or [])
        else:
            path.write_bytes(content)
        with pytest.raises(TinyVisionError, match=message):
            tfrecord_dataset(path, 8)


def test_tfrecord_check_all_records(tmp_path):
    path = tmp_path / "mixed.tfrecord"
    _write_records(path, [make_example(_png((9, 9, 9)), 0).SerializeToString(),
                          make_example(b"broken", 1).SerializeToString()])
    tfrecord_dataset(path, 8)  # only the first record is checked by default
    with pytest.raises(TinyVisionError, match="record 1: not a decodable"):
        tfrecord_dataset(path, 8, check_all_records=True)


def test_image_folder_validation_split(tmp_path):
    """Deterministic, disjoint subsets of the sizes image_dataset_from_directory gives; bad splits refused."""
    for name, count in {"a": 7, "b": 6}.items():
        (tmp_path / name).mkdir()
        for i in range(count):  # distinct pixels per file: each sample is recognisable
            _write_image(tmp_path / name / f"{i}.png", (10 * i, 100 if name == "a" else 200, 0), (8, 8), "png")
    seen = {}
    for subset in ("training", "validation"):
        ds, names = image_folder_dataset(tmp_path, 8, batch_size=None, validation_split=0.3, subset=subset)
        again, _ = image_folder_dataset(tmp_path, 8, batch_size=None, validation_split=0.3, subset=subset)
        seen[subset] = [(x.numpy().tobytes(), int(y)) for x, y in ds]
        assert seen[subset] == [(x.numpy().tobytes(), int(y)) for x, y in again]
    assert len(seen["validation"]) == int(0.3 * 13) and len(seen["training"]) == 13 - int(0.3 * 13)
    assert not set(seen["training"]) & set(seen["validation"])
    with pytest.raises(TinyVisionError, match="between 0 and 1"):
        image_folder_dataset(tmp_path, 8, validation_split=1.5, subset="training")
    with pytest.raises(TinyVisionError, match="subset must be one of"):
        image_folder_dataset(tmp_path, 8, validation_split=0.2)


def test_grey_models_get_the_grey_the_board_makes():
    """A one-channel model (TFLM's person detection) is fed grey with the weights of the board's camera path,
    (77 R + 150 G + 29 B) / 256; RGB models get the images unchanged; other channel counts are refused."""
    from tinyvision.data.normalization import fed_image_shape, normalize, to_model_channels

    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]]]], np.uint8)
    grey = to_model_channels(normalize(pixels), 1)
    assert grey.shape == (1, 1, 4, 1) and grey.dtype == np.float32
    want = normalize((pixels.astype(np.float64) @ np.array([77, 150, 29]) / 256)[..., None])
    np.testing.assert_allclose(grey, want, atol=1e-6)
    rgb = normalize(pixels)
    assert to_model_channels(rgb, 3) is not None and np.array_equal(to_model_channels(rgb, 3), rgb)
    assert fed_image_shape((96, 96, 1)) == fed_image_shape((96, 96, 3)) == (96, 96, 3)
    with pytest.raises(TinyVisionError, match="takes 4-channel images; tinyvision feeds RGB or grey"):
        fed_image_shape((96, 96, 4), "m.tflite")
