"""tinyvision.bundle: a bundle read from disk is re-derived from its model files; every tampered plan is refused
with the field and both values named; export --arduino refuses a bundle that is not bit-exact."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tinyvision.errors import TinyVisionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, small_cnn_tflite):
    """The small CNN as model.tflite with two bundles of it next to it: 2x2 patches (one interpreter at a
    time) and two stages (2x2, then 2x3 patches of that stage buffer)."""
    from converters.patching import split_patch_stage, split_points, split_stages, write_bundle
    from converters.patching.bundle import finalize

    folder = tmp_path_factory.mktemp("format")
    (folder / "model.tflite").write_bytes(small_cnn_tflite)
    points = split_points(small_cnn_tflite)
    one = write_bundle(finalize(split_patch_stage(small_cnn_tflite, points[-1], 2)), folder / "one")
    two = write_bundle(finalize(split_stages(small_cnn_tflite, [(points[0], 2), (points[-1], (2, 3))])),
                       folder / "two")
    segment = write_bundle(finalize(split_stages(small_cnn_tflite, [(points[0], 2), (points[-1], 1)])),
                           folder / "segment")
    return {"one": one, "two": two, "segment": segment}


def tampered(tmp_path, bundle, change):
    folder = tmp_path / "tampered"
    shutil.copytree(bundle, folder)
    plan = json.loads((folder / "plan.json").read_text())
    change(plan)
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def swap_stage_offsets(plan):
    a, b = plan["arena"]["stages"]
    a["offset"], b["offset"] = b["offset"], a["offset"]


TAMPERS = [
    ("two", swap_stage_offsets, r"offline plan does not fit the arena: .*pinned at \d+ but planned at \d+"),
    ("one", lambda p: [s.update(size=16) for s in p["arena"]["persistent"]],
     r"arena.persistent\[0\].size is 16, but the model files give \d+"),
    ("one", lambda p: [s.update(size=16) for s in p["arena"]["persistent"]] + [m.update(persistent_bytes=16)
                                                                                  for m in p["models"]],
     r"arena.size is \d+, but the model files give \d+"),  # the slot of the largest section shrank
    ("one", lambda p: [p["arena"]["persistent"][4].update(size=1168), p["models"][4].update(persistent_bytes=1168)],
     r"models\[4\].persistent_bytes is 1168, but TFLM measures 1152 B for tail.tflite"),
    ("one", lambda p: p["arena"].update(temp_reserve=0), r"arena.temp_reserve is 0, but the model files give \d+"),
    ("one", lambda p: p["models"][1].update(nonpersistent_bytes=-5),
     r"models\[1\].nonpersistent_bytes is -5, expected an integer in \[0, "),
    ("one", lambda p: p["models"][1].update(nonpersistent_bytes=16),
     r"models\[1\].nonpersistent_bytes is 16, but TFLM measures \d+ B"),
    ("one", lambda p: p["arena"].update(offline_plans=False),
     r"arena.offline_plans is false, but the models do carry offline plans"),
    ("one", lambda p: p["stats"].update(macs=12345), r"stats.macs is 12345, but the model files give \d+"),
    ("one", lambda p: p["models"][0].update(macs=1), r"models\[0\].macs is 1, but patch_top_left.tflite has \d+ MACs"),
    ("one", lambda p: p["arena"].update(size=999_999_999_999_999),
     r"arena.size is 999999999999999, expected an integer in \[0, "),
    ("one", lambda p: p["arena"].update(size=p["arena"]["size"] + 16),
     r"arena.size is \d+, but the model files give \d+"),
    ("one", lambda p: p["patches"][0]["window"].update(x=0.0), r"patches\[0\].window.x is 0.0, expected an integer"),
    ("one", lambda p: p["patches"][0]["window"].update(x=0.5), r"patches\[0\].window.x is 0.5, expected an integer"),
    ("one", lambda p: p["patches"][0]["window"].update(x=True), r"patches\[0\].window.x is True, expected an integer"),
    ("one", lambda p: p["patches"][0]["window"].update(w="3"), r"patches\[0\].window.w is '3', expected an integer"),
    ("one", lambda p: p["stages"][0].update(shape=[20000, 20000, 8]),
     r"stages\[0\].shape is \[20000, 20000, 8\], expected a shape of at most"),
    ("two", lambda p: p["patches"][0]["output"].update(x=1), r"the patch outputs .* of stage 0 overlap"),
    ("segment", lambda p: p["arena"].pop("in_place"), r"arena.in_place is absent, but the model files give \[\d+\]"),
    ("segment", lambda p: p["arena"].update(in_place=[0] + p["arena"]["in_place"]),
     r"arena.in_place lists model 0, which does not read and fill whole stage buffers alone"),
    ("two", lambda p: p["arena"]["stages"][0].update(offset=0),
     r"arena.stages\[0\].offset is 0, inside the \d+ B at the bottom of the shared region that creating the models"),
    ("two", lambda p: p["arena"].update(in_place=[len(p["models"]) - 2]),
     r"arena.in_place lists model \d+, which does not read and fill whole stage buffers alone"),
]


@pytest.mark.parametrize("which, change, message", TAMPERS)
def test_tampered_plans_are_refused_with_the_field_and_both_values(bundles, tmp_path, which, change, message):
    from tinyvision.bundle import read_bundle

    folder = tampered(tmp_path, bundles[which], change)
    with pytest.raises(TinyVisionError, match=message):
        read_bundle(folder)


def test_deeply_nested_plan(bundles, tmp_path):
    from tinyvision.bundle import read_bundle

    folder = tampered(tmp_path, bundles["one"], lambda p: None)
    (folder / "plan.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TinyVisionError, match="nests too deeply"):
        read_bundle(folder)


def test_read_bundle_rederives_and_round_trips(bundles):
    from tinyvision.bundle import read_bundle

    for folder in bundles.values():
        bundle = read_bundle(folder)
        assert bundle.plan() == json.loads(open(os.path.join(folder, "plan.json")).read())


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_export_arduino_refuses_swapped_patch_files(bundles, tmp_path):
    """Two patch models of the second stage with the same shapes, heads, MACs and plans, their files swapped:
    only running the bundle against its source shows it."""
    folder = tmp_path / "swapped"
    shutil.copytree(bundles["two"], folder)
    shutil.copy(os.path.join(os.path.dirname(bundles["two"]), "model.tflite"), tmp_path / "model.tflite")
    a, b = folder / "stage1_patch_top_left.tflite", folder / "stage1_patch_top_right.tflite"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert data_a != data_b
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    out = tmp_path / "sketch"
    done = _cli("export", f"--model={folder}", "--arduino", f"--output={out}")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "is not bit-exact with its source" in done.stderr
    assert not out.exists()
    done = _cli("export", f"--model={bundles['two']}", "--arduino", f"--output={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified: bit-exact" in done.stdout
