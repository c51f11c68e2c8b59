"""`tinyvision convert --patches` / `tinyvision analyze` on a bundle, end to end as subprocesses."""
import json
import os
import subprocess
import sys

import pytest

from conftest import int8_tflite
from converters.export.flash_image import image_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def small_mobilenet(tmp_path_factory):
    """keras MobileNetV2(0.35, 64x64x3, 10 classes, random weights) int8 .tflite: (path, stage length n)."""
    import tensorflow as tf

    from converters.patching import split_points

    tf.keras.utils.set_random_seed(0)
    keras_model = tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None, classes=10,
                                                    classifier_activation=None)
    data = int8_tflite(keras_model, samples=3)
    path = tmp_path_factory.mktemp("bundle_cli") / "mbv2.tflite"
    path.write_bytes(data)
    points = [n for n in split_points(data) if n <= 12]
    return path, points[-1]


def test_grid_convert_then_analyze(small_mobilenet):
    path, n = small_mobilenet
    out = path.parent / "grid_bundle"
    done = _cli("convert", f"--model={path}", "--patches=2x2", f"--split={n}", f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shared region" in done.stdout and "MAC overhead" in done.stdout
    assert (out / "plan.json").is_file()
    assert "I0000" not in done.stderr and "absl::InitializeLog" not in done.stderr  # TF's start-up chatter

    done = _cli("analyze", f"--model={out}", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("head_bytes", "tail_bytes", "total_bytes", "image_bytes", "mac_overhead", "flash_bytes",
                "bit_exact", "baseline", "instructions"):
        assert key in result, key
    # the patches' halo and re-created interpreters cost instructions (estimated for the Cortex-M4F)
    assert result["instructions"] > result["baseline"]["instructions"] > 0
    assert result["bit_exact"] is True
    # convert reorders and plans the model before the split; the plan still names the user's file
    assert result["source"] == str(path) and result["source_sha256_match"] is True
    assert result["image_bytes"] == 64 * 64 * 3
    assert result["interpreters"] == "one_at_a_time" and result["tail_bytes"] == max(
        m["persistent_bytes"] for m in result["models"])
    assert result["total_bytes"] >= result["head_bytes"] + result["tail_bytes"]
    assert result["head_bytes"] < result["baseline"]["head_bytes"]
    assert result["mac_overhead"] > 0
    plan = json.loads((out / "plan.json").read_text())
    files = [(out / m["file"]).read_bytes() for m in plan["models"]]
    assert result["flash_bytes"] == image_size(files) < sum(len(f) for f in files)  # border variants share weights


def test_a_chain_may_end_in_segments(small_mobilenet):
    """`--patches=N:2x2,M:1x1`: a 1x1 stage is a segment of the tail, run in place on the stage buffers;
    a first stage of one tile is refused as a grid, in one line."""
    from converters.patching import split_points

    path, n = small_mobilenet
    later = [m for m in split_points(path.read_bytes()) if m > n]
    out = path.parent / "segment_bundle"
    done = _cli("convert", f"--model={path}", f"--patches={n}:2x2,{later[len(later) // 2]}:1x1", f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["stages"]) == 2 and plan["arena"]["in_place"] == [len(plan["models"]) - 2]
    assert "verified: bit-exact" in done.stdout

    done = _cli("convert", f"--model={path}", "--patches=1x1", f"--split={n}", f"--output={path.parent / 'no'}")
    assert done.returncode != 0 and "a grid needs at least 2 tiles" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_auto_search_picks_a_split(small_mobilenet):
    path, _ = small_mobilenet
    out = path.parent / "auto_bundle"
    done = _cli("convert", f"--model={path}", "--patches=auto", "--budget=256KiB", "--max_mac_overhead=0.5",
                f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Pareto" in done.stdout and "<- chosen" in done.stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["arena"]["size"] <= 256 * 1024


def test_impossible_budget_fails_cleanly(small_mobilenet):
    path, _ = small_mobilenet
    out = path.parent / "never_written"
    done = _cli("convert", f"--model={path}", "--patches=auto", "--budget=1KiB", f"--output={out}")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "smallest" in errors[0]
    assert not out.exists()
    assert not [p for p in os.listdir(path.parent) if p.startswith(".never_written")]


def test_a_bundle_written_elsewhere_finds_its_source(small_mobilenet):
    """convert records where it read the source, relative to the bundle, so analyze (and export --arduino)
    can check a bundle written far from its model."""
    path, n = small_mobilenet
    out = path.parent / "elsewhere" / "deeper" / "bundle"
    done = _cli("convert", f"--model={path}", "--patches=2x2", f"--split={n}", f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "plan.json").read_text())["source"]["path"] == os.path.join("..", "..", "..", path.name)
    done = _cli("analyze", f"--model={out}", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["bit_exact"] is True
