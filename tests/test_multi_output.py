"""Models with several outputs (YOLO-style detectors: one output per scale) split into patch bundles whose
tail makes every output, bit-exact on TFLM; float-I/O exports (a DEQUANTIZE per output, wherever the
exporter put it) run their int8 core; outputs of rank 3 (a detector's anchors) too. The real-world cases, when
../shared/models has them, are MCUNet's person detector from tinyengine and MediaPipe's BlazeFace."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from converters.ir import Model
from tinyvision.bundle import hwc
from tinyvision.errors import TinyVisionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MODELS = os.path.join(ROOT, os.pardir, "shared", "models")
LIB_DIR = os.path.join(ROOT, os.pardir, "shared", "third_party", "Chirale_TensorFlowLite")


def _two_scale_detector(float_io, anchor_rows=False):
    """A 64x64 detector with a head at stride 8 (8x8x9) and one at stride 16 (4x4x9), converted to int8 by the
    real TFLite converter; ``float_io``: float input and outputs (QUANTIZE in, a DEQUANTIZE per output);
    ``anchor_rows``: each head reshaped to one row per cell, (1, 64, 9) and (1, 16, 9), as BlazeFace's are. The
    converter's output order changes from run to run: tests take it from the converted model."""
    import tensorflow as tf

    from converters.quantize import int8_converter
    from tests.conftest import randomize

    layers = tf.keras.layers
    image = layers.Input((64, 64, 3))
    x = layers.Conv2D(8, 3, 2, padding="same", activation="relu")(image)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 1, activation="relu")(x)
    x = layers.DepthwiseConv2D(3, 2, padding="same", activation="relu")(x)
    x = layers.Conv2D(24, 1, activation="relu")(x)
    x = layers.DepthwiseConv2D(3, 2, padding="same", activation="relu")(x)
    fine = layers.Conv2D(24, 1, activation="relu")(x)
    y = layers.DepthwiseConv2D(3, 2, padding="same", activation="relu")(fine)
    y = layers.Conv2D(32, 1, activation="relu")(y)
    heads = [layers.Conv2D(9, 1)(fine), layers.Conv2D(9, 1)(y)]
    if anchor_rows:
        heads = [layers.Reshape((h.shape[1] * h.shape[2], 9))(h) for h in heads]
    model = randomize(tf.keras.Model(image, heads), seed=3)
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, (8, 1, 64, 64, 3)).astype(np.float32)
    converter = int8_converter(model, lambda: ([s] for s in samples))
    if float_io:
        converter.inference_input_type = converter.inference_output_type = tf.float32
    return converter.convert()


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_output")
    paths = {}
    for name, float_io, anchor_rows in (("int8", False, False), ("float_io", True, False), ("rows", True, True)):
        paths[name] = str(folder / f"two_scale_{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(_two_scale_detector(float_io, anchor_rows))
    return paths


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_the_int8_core_drops_every_output_dequantize(detectors):
    from converters.patching.edges import int8_core

    source = Model.from_bytes(_read(detectors["float_io"]))
    core, edges = int8_core(source)
    assert [op.opcode for op in source.main.ops].count("DEQUANTIZE") == 2
    assert "DEQUANTIZE" not in [op.opcode for op in core.main.ops]
    assert [tuple(t.shape) for t in core.main.outputs] == [tuple(t.shape) for t in source.main.outputs]
    assert len(edges.output_quants) == 2 and edges.lead_ops == 1
    described = edges.plan()
    assert "output" not in described and [o["scale"] for o in described["outputs"]] == [
        q for q, _ in edges.output_quants]


@pytest.mark.parametrize("name, shapes", [("int8", {(8, 8, 9), (4, 4, 9)}), ("float_io", {(8, 8, 9), (4, 4, 9)}),
                                          ("rows", {(1, 64, 9), (1, 16, 9)})])
def test_a_two_stage_split_makes_every_output_bit_exact(detectors, name, shapes):
    """Two patch stages ahead of a tail that makes both heads; the host runner gives the source's own outputs."""
    from converters.patching import split_stages
    from converters.patching.bundle import finalize
    from converters.patching.edges import random_source_inputs
    from tinyvision.runtime import tflm
    from tinyvision.runtime.patch_runner import PatchRunner, verify_bundle

    original = _read(detectors[name])
    lead = int(name != "int8")
    bundle = finalize(split_stages(original, [(lead + 3, 2), (lead + 5, 2)], f"{name}.tflite"))
    tail = bundle.models[bundle.tail]
    # in the source's output order, which the TFLite converter does not keep from run to run
    assert tail.output_shapes == tuple(hwc(t.shape) for t in Model.from_bytes(original).main.outputs)
    assert set(tail.output_shapes) == shapes
    with pytest.raises(TinyVisionError, match="has 2 outputs, not one"):
        tail.output_shape
    check = verify_bundle(bundle, original, n_inputs=3)
    assert check.ok, check.detail
    x = random_source_inputs(Model.from_bytes(original), 2, seed=5)
    got, want = PatchRunner(bundle).run_source(x), [tflm.run(original, [x[i:i + 1]]) for i in range(2)]
    assert len(got) == 2
    for k in range(2):
        assert got[k].dtype == np.dtype(np.float32 if lead else np.int8)
        assert np.array_equal(got[k], np.concatenate([w[k] for w in want]))


def test_convert_auto_writes_a_multi_output_bundle_that_analyze_verifies(detectors, tmp_path):
    out = tmp_path / "bundle"
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "convert", f"--model={detectors['float_io']}",
                           "--patches=auto", "--budget=16KiB", f"--output={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bit-exact" in done.stdout
    plan = json.loads((out / "plan.json").read_text())
    tail = plan["models"][plan["tail"]["model"]]
    assert sorted(tail["output_shapes"]) == [[4, 4, 9], [8, 8, 9]] and "output_shape" not in tail
    assert len(plan["source"]["outputs"]) == 2 and plan["kind"] == "patch_stage"
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "analyze", f"--model={out}", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["bit_exact"] is True
    assert [m.get("output_shapes") for m in report["models"] if m["role"] == "tail"] == [tail["output_shapes"]]


def test_a_plan_names_its_outputs_one_way(detectors):
    from converters.patching import split_stages
    from converters.patching.bundle import finalize
    from tinyvision.bundle import check_plan_fields

    plan = finalize(split_stages(_read(detectors["int8"]), [(3, 2)], "int8.tflite")).plan()
    check_plan_fields(plan)
    tail = plan["tail"]["model"]
    plan["models"][tail]["output_shape"] = plan["models"][tail]["output_shapes"][0]
    with pytest.raises(TinyVisionError, match=rf"models\[{tail}\] needs exactly one of output_shape and output_shapes"):
        check_plan_fields(plan)


def test_predict_names_why_it_cannot_read_several_outputs(detectors, tmp_path):
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "predict", f"--model={detectors['int8']}",
                           f"--image={image}"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith(
        "has 2 outputs: predict and evaluate read one (class scores, a heatmap or a box grid); a model with several "
        "output heads needs its own decoder (analyze, convert and export --arduino take it)")


# name in ../shared/models: (its outputs in plan.json, an arena the auto bundle stays under)
REAL_DETECTORS = {
    # MCUNet's person detector (mit-han-lab/tinyengine assets/detection.tflite): 128x160 float in, an int8 core
    # with a feature pyramid, three float YOLOv3 outputs whose DEQUANTIZEs sit between the core's ops; stock TFLM
    # needs 386,272 B of arena, the auto bundle 82,976 B
    "tinyengine_detection": ([[4, 5, 18], [8, 10, 18], [16, 20, 18]], 96 << 10),
    # MediaPipe's BlazeFace as OpenMV ships it (openmv/openmv lib/models/blazeface_front_128.tflite): 128x128 float
    # in, four float outputs of rank 3 (anchors x values); stock 475,824 B, the auto bundle 102,992 B
    "blazeface_front_128": ([[1, 512, 16], [1, 512, 1], [1, 384, 1], [1, 384, 16]], 112 << 10),
}


@pytest.mark.parametrize("name", sorted(REAL_DETECTORS))
def test_detectors_others_trained_patch_bit_exact_onto_the_nano(name, tmp_path):
    """convert --patches=auto of a real multi-output detector: every output bit-exact on TFLM (convert checks
    it) and on the emulated Cortex-M4F, in an arena the Nano holds."""
    model = os.path.join(SHARED_MODELS, f"{name}.tflite")
    if not os.path.isfile(model):
        pytest.skip(f"../shared/models/{name}.tflite is absent")
    shapes, ceiling = REAL_DETECTORS[name]
    out = tmp_path / "bundle"
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "convert", f"--model={model}",
                           "--patches=auto", f"--output={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified: bit-exact" in done.stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["models"][plan["tail"]["model"]]["output_shapes"] == shapes
    assert plan["arena"]["size"] <= ceiling
    if not os.path.isdir(LIB_DIR) or not shutil.which("qemu-system-arm") or not shutil.which("arm-none-eabi-g++"):
        return
    from tinyvision.runtime.board import run_bundle

    (emulated,) = run_bundle(str(out), ("cortex-m4",), LIB_DIR).values()
    assert emulated.stage_mismatches == [0] * len(plan["stages"]) and emulated.score_diff == 0
    assert [o.size for o in emulated.run.outputs] == [int(np.prod(s)) for s in shapes]
    assert emulated.run.arena["used"] <= plan["arena"]["size"]
