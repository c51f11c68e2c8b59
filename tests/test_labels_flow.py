"""Class names travel from the dataset to the model metadata, the bundle, the C header and the sketch,
and the sketch's test image can be the user's own, with its expected label."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyvision.errors import TinyVisionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANIMALS = ["bear", "cat", "dog", "fox", "owl"]  # one per output of the small CNN


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, small_cnn_tflite):
    """(the small CNN with ANIMALS as metadata labels, its 2x2 bundle folder, a folder: dataset of it)."""
    from converters.patching import split_patch_stage, split_points, write_bundle
    from converters.patching.bundle import finalize
    from converters.quantize import attach_metadata, read_labels

    import tensorflow as tf

    root = tmp_path_factory.mktemp("labels")
    model = attach_metadata(small_cnn_tflite, "small_cnn", labels=ANIMALS)
    bundle = finalize(split_patch_stage(model, split_points(model)[-1], 2))
    bundle.labels = read_labels(model)  # as convert --patches does
    folder = write_bundle(bundle, root / "bundle")
    (root / bundle.source["file"]).write_bytes(model)  # export --arduino checks the bundle against it
    rng = np.random.default_rng(0)
    for name in ANIMALS:
        (root / "photos" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
            (root / "photos" / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return model, folder, root / "photos"


def _sketch_file(report, name):
    with open(os.path.join(report.sketch_dir, name), encoding="utf-8") as f:
        return f.read()


def test_bundle_labels_reach_the_sketch(labelled, tmp_path):
    from converters.export.arduino import export_arduino
    from converters.patching import read_bundle

    _, folder, photos = labelled
    assert read_bundle(folder).labels == ANIMALS
    report = export_arduino(folder, tmp_path / "a", verbose=False)
    assert '"bear",\n    "cat",\n    "dog",\n    "fox",\n    "owl",' in _sketch_file(report, "plan_data.cpp")
    # the built-in sample's label means nothing for these classes
    assert "kTinyVisionTestLabel = -1;" in _sketch_file(report, "test_image.h")

    fox = photos / "fox" / "1.png"
    report = export_arduino(folder, tmp_path / "b", test_image=str(fox), verbose=False)
    assert "kTinyVisionTestLabel = 3;" in _sketch_file(report, "test_image.h")  # from the class folder's name
    readme = _sketch_file(report, "README.md")  # the sketch folder explains itself
    assert "is class 3 (fox)" in readme and "0 bear, 1 cat, 2 dog, 3 fox, 4 owl" in readme
    assert "TINYVISION_USE_CAMERA" in readme and "--board=NAME" in readme
    report = export_arduino(folder, tmp_path / "c", test_image=str(fox), test_label="owl", verbose=False)
    assert "kTinyVisionTestLabel = 4;" in _sketch_file(report, "test_image.h")
    for bad in ("zebra", "9"):
        with pytest.raises(TinyVisionError, match="test label"):
            export_arduino(folder, tmp_path / "d", test_image=str(fox), test_label=bad, verbose=False)
    assert not (tmp_path / "d").exists()


def test_cli_takes_the_test_image_from_the_dataset(labelled, tmp_path):
    from tinyvision.data.loaders import folder_files

    _, folder, photos = labelled
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "export", f"--model={folder}", "--arduino",
                           f"--dataset=folder:{photos}", f"--output={tmp_path}"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    files, labels, _ = folder_files(photos, 0.2, "validation")
    with open(tmp_path / "tinyvision_bundle" / "test_image.h", encoding="utf-8") as f:
        assert f"kTinyVisionTestLabel = {labels[0]};" in f.read()


def test_c_header_carries_the_labels(labelled, tmp_path):
    from converters.export.c_array import export_c_array

    model, _, _ = labelled
    path = tmp_path / "animals.tflite"
    path.write_bytes(model)
    source, header = export_c_array(str(path), tmp_path, 4096)
    with open(header, encoding="utf-8") as f:
        text = f.read()
    assert "constexpr int animals_tflite_label_count = 5;" in text
    with open(source, encoding="utf-8") as f:
        assert 'animals_tflite_labels[animals_tflite_label_count] = {\n  "bear",\n  "cat",' in f.read()
    if shutil.which("g++"):
        done = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", source, "-o", str(tmp_path / "a.o")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
