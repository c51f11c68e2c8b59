"""`tinyvision evaluate` / `predict` / `train` on a folder dataset, end to end as subprocesses.

The model reads the colour of an image: a 3x3 convolution passes each channel through, then a
global average pool and a dense layer with identity weights, so its prediction is the dominant
channel, and the folder's class names are that colour's name. One "blue" image is red on purpose:
every form of the model must get exactly 29 of the 30 images right.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLOURS = ("blue", "green", "red")  # sorted: labels 0, 1, 2 ...
CHANNEL = {"red": 0, "green": 1, "blue": 2}  # ... and the RGB channel each one lights
RESOLUTION = 16


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _write_png(path, channel, rng):
    import tensorflow as tf

    pixels = rng.integers(0, 50, (20, 24, 3)).astype(np.uint8)
    pixels[..., channel] += 180
    path.write_bytes(tf.io.encode_png(pixels).numpy())


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """(folder dataset path, colour .keras, its int8 .tflite with labels, a 2x2 patch bundle of it)."""
    import tensorflow as tf

    from converters.quantize import to_int8_tflite
    from tinyvision.data import image_folder_dataset

    root = tmp_path_factory.mktemp("colours")
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for name in COLOURS:
        (photos / name).mkdir(parents=True)
        for i in range(10):
            wrong = name == "blue" and i == 3
            _write_png(photos / name / f"{i:02d}.png", CHANNEL["red" if wrong else name], rng)

    inputs = tf.keras.Input((RESOLUTION, RESOLUTION, 3))
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    kernel[1, 1] = np.eye(3)
    x = tf.keras.layers.Conv2D(3, 3, padding="same", use_bias=False, kernel_initializer=tf.constant_initializer(kernel))(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    order = np.eye(3, dtype=np.float32)[:, [CHANNEL[c] for c in COLOURS]]  # logit k = channel of colour k
    outputs = tf.keras.layers.Dense(3, kernel_initializer=tf.constant_initializer(4 * order))(x)
    model = tf.keras.Model(inputs, outputs, name="colours")
    keras_path = root / "colours.keras"
    model.save(keras_path)
    data, names = image_folder_dataset(photos, RESOLUTION, batch_size=None)
    tflite_path = root / "colours.tflite"
    tflite_path.write_bytes(to_int8_tflite(model, data, labels=names))
    bundle = root / "bundle"
    done = _cli("convert", f"--model={tflite_path}", "--patches=2x2", "--split=1", f"--output={bundle}")
    assert done.returncode == 0, done.stderr[-2000:]
    return photos, keras_path, tflite_path, bundle


def test_evaluate_float_int8_bundle_side_by_side(colours):
    photos, keras_path, tflite_path, bundle = colours
    png = photos.parent / "confusion.png"
    done = _cli("evaluate", f"--model={keras_path},{tflite_path}", f"--model={bundle}",
                f"--dataset=folder:{photos}", "--validation_split=0", f"--confusion={png}")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    assert rows["colours.keras"][1:4] == ["float", "0.9667", "30"]
    assert rows["colours.tflite"][1:4] == ["int8", "0.9667", "30"]
    assert rows["bundle"][1:4] == ["bundle", "0.9667", "30"]
    assert rows["blue"][1:] == ["10", "0.9000", "0.9000", "0.9000"]  # per class: the red "blue" image
    assert rows["red"][1:] == ["10", "1.0000", "1.0000", "1.0000"]
    assert "int8 drop: +0.00 points" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_uses_the_validation_subset_and_checks_classes(colours):
    photos, _, tflite_path, _ = colours
    done = _cli("evaluate", f"--model={tflite_path}", f"--dataset=folder:{photos}", "--validation_split=0.2")
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [line.split() for line in done.stdout.splitlines() if line.startswith("colours.tflite")]
    assert row[3] == "6"  # int(0.2 * 30) held-out images
    done = _cli("evaluate", f"--model={tflite_path}", "--dataset=builtin")  # 8 shape classes vs 3 outputs
    assert done.returncode == 1 and "has 8 classes, the model has 3 outputs" in done.stderr
    assert "Traceback" not in done.stderr


def test_predict_names_classes_from_metadata_and_bundle(colours):
    photos, _, tflite_path, bundle = colours
    images = [photos / "green" / "00.png", photos / "red" / "05.png"]
    for model in (tflite_path, bundle):
        done = _cli("predict", f"--model={model}", f"--image={images[0]}", f"--image={images[1]}", "--top=2")
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.strip().splitlines()
        assert lines[0].startswith(f"{images[0]}: green  (green ")
        assert lines[1].startswith(f"{images[1]}: red  (red ")
    done = _cli("predict", f"--model={tflite_path}", f"--image={photos / 'missing.png'}")
    assert done.returncode == 1 and "cannot read image" in done.stderr


def test_train_on_a_folder_reports_validation_accuracy(colours):
    photos, keras_path, _, _ = colours
    out = photos.parent / "trained.keras"
    done = _cli("train", f"--model={keras_path}", f"--dataset=folder:{photos}", "--epochs=1", "--noqat",
                "--batch_size=8", "--learning_rate=1e-4", f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = [line for line in done.stdout.splitlines() if line.startswith("float_accuracy: ")]
    assert accuracy and 0.0 <= float(accuracy[0].split()[1]) <= 1.0
    assert out.is_file()
