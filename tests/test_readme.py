"""The README's quickstart and deploy sections, run as printed from a copy of the checkout.

The `tinyvision` lines of the two marked code blocks are run in order in a folder holding a copy of
the project and a tiny `photos/` dataset (3 classes, so `--classes=3` as printed fits); flags appended
after each line make it fast (absl takes the last value of a repeated flag): 32 px, one epoch each.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "owl")
# Per command, what makes it fast; nothing here changes what the command does.
FAST = {"build": ["--resolution=32"], "train": ["--epochs=1", "--qat_epochs=1", "--batch_size=8"],
        "convert": ["--calibration_samples=16"]}


def readme_commands(marker):
    """The `tinyvision ...` lines of the README code block after ``<!-- marker: ...-->``."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- " + marker + r":.*?-->\n```sh\n(.*?)```", text, re.S)
    assert block, f"README.md has no '{marker}' block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("tinyvision ")]


def _photos(folder):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(1, 11):
            pixels = rng.integers(0, 60, (40, 40, 3)).astype(np.uint8)
            pixels[..., label] += 150
            (folder / name / f"{i:03d}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())


@pytest.mark.slow
def test_quickstart_and_deploy_run_as_printed(tmp_path):
    commands = readme_commands("quickstart") + readme_commands("deploy")
    assert [c.split()[1] for c in commands] == ["build", "train", "convert", "evaluate", "predict", "analyze",
                                                "convert", "evaluate", "export"]
    for name in ("setup.py", "tinyvision", "models", "converters", "tflm_app"):
        source = os.path.join(ROOT, name)
        (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, tmp_path / name)
    _photos(tmp_path / "photos")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    outputs = {}
    for command in commands:
        args = shlex.split(command)[1:]
        done = subprocess.run([sys.executable, "-m", "converters.cli.main", *args, *FAST.get(args[0], [])],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
        assert done.stderr == "", f"{command} wrote on stderr:\n{done.stderr[-1500:]}"
        outputs.setdefault(args[0], []).append(done.stdout)
    assert "float_accuracy: " in outputs["train"][0] and "qat_accuracy: " in outputs["train"][0]
    assert "labels: cat, dog, owl" in outputs["convert"][0]
    assert "int8 drop:" in outputs["evaluate"][0] and (tmp_path / "out" / "confusion.png").is_file()
    assert re.match(r"photos/cat/001\.jpg: (cat|dog|owl)  \(", outputs["predict"][0])
    assert (tmp_path / "out" / "memory.png").is_file()
    sketch = tmp_path / "out" / "sketch" / "tinyvision_bundle"
    assert (sketch / "tinyvision_bundle.ino").is_file() and (sketch / "README.md").is_file()
    assert '"cat",' in (sketch / "plan_data.cpp").read_text()
