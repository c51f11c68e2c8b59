"""The project installed as users install it (a wheel, not editable) carries what it needs at run time.

Builds the wheel from a copy of the sources, installs it into a fresh virtual environment (with the
system's site-packages, so TensorFlow is not downloaded again) and exports an Arduino sketch of a
bundle with that environment's `tinyvision` command, from a folder outside the checkout.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from test_export_arduino import write_small_cnn_bundle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "README.md", "tinyvision", "models", "converters", "tflm_app")


def _run(args, cwd, env=None):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment without this checkout on the path) of a wheel install."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__", "tests")} if copy is shutil.copytree else {}
        copy(os.path.join(ROOT, name), source / name, **kwargs)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
          str(source)], cwd=work)
    (wheel,) = glob.glob(str(work / "dist" / "tinyvision-*.whl"))
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], cwd=work)
    bin_dir = work / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", wheel], cwd=work)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", "")
    return bin_dir, env


def test_wheel_install_exports_a_sketch(installed, small_cnn_tflite, tmp_path):
    bin_dir, env = installed
    where = _run([str(bin_dir / "python"), "-c", "import converters.export.arduino as a; print(a.tflm_app_dir())"],
                 cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(bin_dir.parent)) and "site-packages" in where  # the wheel's copy, not the checkout
    harness = _run([str(bin_dir / "python"), "-c", "from tinyvision.runtime.board import harness_folder; "
                    "print(harness_folder())"], cwd=tmp_path, env=env).stdout.strip()
    for name in ("harness_main.cpp", "platform_m4.c", "mps2_an386.ld.in", "Arduino.h"):  # tinyvision emulate
        assert os.path.isfile(os.path.join(harness, name)), name
    bundle = tmp_path / "bundle"
    write_small_cnn_bundle(bundle, small_cnn_tflite, "one_at_a_time")
    with open(bundle / "plan.json", encoding="utf-8") as f:  # export checks the bundle against its source
        (tmp_path / json.load(f)["source"]["file"]).write_bytes(small_cnn_tflite)
    done = _run([str(bin_dir / "tinyvision"), "export", f"--model={bundle}", "--arduino", "--output=sketch"],
                cwd=tmp_path, env=env)
    sketch = tmp_path / "sketch" / "tinyvision_bundle"
    assert "RAM" in done.stdout and (sketch / "tinyvision_bundle.ino").is_file()
    with open(os.path.join(ROOT, "tflm_app", "tinyvision_runtime.cpp"), encoding="utf-8") as f:
        assert (sketch / "tinyvision_runtime.cpp").read_text(encoding="utf-8") == f.read()
