"""The CLI's quick paths (--help, --version, build --list) never load TensorFlow, the zoo table they print
matches the builders, and a normal run writes nothing on stderr that is not tinyvision's own.
(Start-up times are printed by benchmarks/cli_startup.py.)"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
# Runs the CLI in-process, then reports whether TensorFlow got imported.
PROBE = ("import sys; from converters.cli.main import main; code = main(['tinyvision'] + sys.argv[1:]); "
         "print('TF LOADED' if 'tensorflow' in sys.modules else 'TF NOT LOADED'); sys.exit(code)")


def _probe(*args):
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=ENV, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["build", "--help"], ["convert", "--help"],
                                  ["build", "--list"]])
def test_quick_paths_do_not_load_tensorflow(args):
    done = _probe(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("TF NOT LOADED") and done.stderr == ""


def test_version_and_help_texts():
    from tinyvision import __version__

    assert _probe("--version").stdout.startswith(f"tinyvision {__version__}\n")
    build = _probe("build", "--help").stdout
    assert "--model: (required)" in build and "--resolution: input resolution (default: the zoo entry's" in build
    convert = _probe("convert", "--help").stdout
    assert "--model=out/model_qat.h5" in convert and "model_qat.keras" not in convert
    assert "--dataset: (required for a Keras model)" in convert


def test_build_list_prints_the_builders_figures():
    from models import ZOO
    from models.zoo import FIGURES_FILE, zoo_figures

    with open(FIGURES_FILE, encoding="utf-8") as f:
        figures = json.load(f)
    assert list(figures) == list(ZOO)
    assert figures["seed003_vww"] == zoo_figures("seed003_vww")
    listed = _probe("build", "--list").stdout
    assert "seed003_vww" in listed and "138,738" in listed and "128x128x3" in listed


@pytest.mark.slow
def test_every_zoo_figure_is_current():
    from models import ZOO
    from models.zoo import FIGURES_FILE, zoo_figures

    with open(FIGURES_FILE, encoding="utf-8") as f:
        figures = json.load(f)
    assert figures == {name: zoo_figures(name) for name in ZOO}  # else: python -m models --write-figures


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((16, 16, 3))
    x = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x)).save(path)
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=ENV, timeout=600)


def test_convert_is_quiet_and_needs_matching_calibration_data(tiny_keras, tmp_path):
    out = tmp_path / "tiny.tflite"
    done = _cli("convert", f"--model={tiny_keras}", f"--output={out}")
    assert done.returncode == 1 and "--dataset is required to convert a Keras model" in done.stderr
    done = _cli("convert", f"--model={tiny_keras}", "--dataset=builtin", f"--output={out}")  # 8 classes, 2 outputs
    assert done.returncode == 1 and "has 8 classes but" in done.stderr and not out.exists()
    done = _cli("convert", f"--model={tiny_keras}", "--dataset=builtin_vww", "--calibration_samples=8",
                f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "calibrating on up to 8 images of builtin_vww (labels: " in done.stdout
    assert done.stderr == ""  # no cuInit, MLIR option dump, absl start-up lines or Python warnings
