"""The int8 models users bring (../shared/models, written by others): analyze, convert and an explicit
patch chain on every one, each checked bit-exact against TFLM running the original model.

Skipped when ../shared/models is absent (a user's checkout). The 224 px PyTorch MobileNetV2 is
large (300 M MACs): it gets one verified inference per check.
"""
import os

import numpy as np
import pytest

from converters.ir import Model
from tinyvision.errors import TinyVisionError

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared", "models")
PYTORCH = "mobilenet_v2_quantized_1x3x224x224"

pytestmark = pytest.mark.skipif(not os.path.isdir(MODELS), reason="../shared/models is absent")

# name: (stock head, tail, what tf.lite.Interpreter does with it, an explicit chain, its SRAM ceiling
# (shared region + persistent, TFLM-measured) or None)
CASES = {
    "person_detect": (55_296, 29_968, "refuses", [(8, 3)], 46_000),
    "vww_96_int8": (73_728, 29_952, "agrees", [(8, 3)], 45_984),
    "kws_ref_model": (16_000, 8_272, "agrees", None, None),
    "tinyengine_vww": (161_472, 63_504, "agrees", [(9, 3)], 111_424),
    # one stage keeps the 224 px test lean; benchmarks/realworld.py shows 17:4x4,25:2x2,29:2x2 (166,848 B shared)
    PYTORCH: (2_451_840, 155_328, "differs", [(17, 4)], None),
}


def load(name):
    with open(os.path.join(MODELS, f"{name}.tflite"), "rb") as f:
        return f.read()


def test_rank1_bias_quantized_dimension_is_normalised_on_import():
    """person_detect's 14 depthwise biases say quantized_dimension 3 (TFLM ignores it): axis 0 in the IR,
    every scale and value kept, and tf.lite.Interpreter loads the re-exported model."""
    from tflite_micro.python.tflite_micro import runtime

    data = load("person_detect")
    raw = runtime.convert_bytearray_to_object(bytearray(data)).subgraphs[0].tensors
    odd = [t for t in raw if t.quantization is not None and t.quantization.quantizedDimension == 3
           and len(t.shape) == 1]
    assert len(odd) == 14
    model = Model.from_bytes(data)
    by_name = {t.name: t for t in model.main.tensors}
    for t in odd:
        ours = by_name[t.name.decode()]
        assert ours.quantization.axis == 0
        np.testing.assert_array_equal(ours.quantization.scale, np.asarray(t.quantization.scale, np.float32))
    from tinyvision.runtime import tflm

    assert tflm.compare(model.to_bytes(), seed=1).verdict == "agrees"


@pytest.mark.parametrize("name", sorted(CASES))
def test_analyze_names_the_reference_and_what_tflite_does(name):
    from tinyvision.analysis.report import analyze_tflite

    head, tail, tflite, _, _ = CASES[name]
    result, _ = analyze_tflite(load(name), f"{name}.tflite", search_min_arena=False)
    assert (result["head_bytes"], result["tail_bytes"]) == (head, tail)
    assert result["reference"] == "TFLM"
    verdict = result["tflite_interpreter"]
    assert verdict["verdict"] == tflite, verdict
    assert "\n" not in verdict["detail"] and "migration" not in verdict["detail"]
    if tflite == "refuses":
        assert "quantized_dimension" in verdict["detail"] and "13 more" in verdict["detail"]
    # every operator gets a Cortex-M4F estimate (kernels the profile never met fall back to the fit over all)
    assert result["instructions"] == sum(op["instructions"] for op in result["ops"]) > result["macs"]


def test_source_edges_of_exported_models():
    """The float-I/O MCUNet model and the NCHW PyTorch export are split on their int8 NHWC core."""
    from converters.patching.edges import int8_core

    core, edges = int8_core(Model.from_bytes(load("tinyengine_vww")))
    assert (edges.lead_ops, edges.input_dtype, edges.layout) == (1, "float32", "NHWC")
    assert edges.output_quants is not None and core.main.inputs[0].shape == (1, 80, 80, 3)
    assert {np.dtype(t.dtype).name for t in core.main.inputs + core.main.outputs} == {"int8"}
    core, edges = int8_core(Model.from_bytes(load(PYTORCH)))
    assert (edges.lead_ops, edges.input_dtype, edges.layout, edges.output_quants) == (1, "int8", "NCHW", None)
    assert core.main.inputs[0].shape == (1, 224, 224, 3) and core.main.ops[0].opcode == "PAD"


def test_quantize_edge_rounds_like_tflm():
    """The host's window quantization equals TFLM's QUANTIZE on values between, on and half-way between
    grid points, and beyond the int8 range."""
    from converters.patching.edges import int8_core, quantize_like_tflm, random_source_inputs
    from tinyvision.runtime import tflm

    model = Model.from_bytes(load("tinyengine_vww"))
    _, edges = int8_core(model)
    first = model.copy()
    graph = first.main
    graph.ops, graph.outputs = graph.ops[:1], [graph.ops[0].outputs[0]]
    graph.prune_tensors()
    scale, zero_point = edges.image_quant
    x = random_source_inputs(model, 1, seed=5)
    half = ((np.arange(x.size) % 400 - 200) + 0.5).reshape(x.shape).astype(np.float32) * np.float32(scale)
    for inputs in (x, half, x * 3):
        (got,) = tflm.run(first.to_bytes(), [inputs.astype(np.float32)])
        np.testing.assert_array_equal(got, quantize_like_tflm(inputs, scale, zero_point))


def test_a_stage_cannot_end_inside_the_input_edges():
    from converters.patching import split_stages

    with pytest.raises(TinyVisionError, match=r"first 1 op\(s\) convert the input"):
        split_stages(load(PYTORCH), [(1, 2)], "mbv2.tflite")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == PYTORCH else n for n in sorted(CASES)])
def test_convert_and_an_explicit_chain_are_bit_exact_on_tflm(name):
    """convert (order + offline plan, checked on TFLM) and a chain of patch stages over the optimized model,
    verified against TFLM running the ORIGINAL model (float or NCHW inputs through the bundle's edges)."""
    from converters.optimize import optimize_tflite
    from converters.patching import split_stages
    from converters.patching.bundle import finalize
    from tinyvision.runtime import tflm
    from tinyvision.runtime.patch_runner import verify_bundle

    head, _, _, chain, ceiling = CASES[name]
    original = load(name)
    optimized, report = optimize_tflite(original, name)  # checked bit-exact with the original on TFLM inside
    if report.planned_head is None:
        assert tflm.measure(optimized).head_bytes <= head
    else:  # the offline plan leaves room for the board's kernel scratch: it never loses there
        assert report.planned_head == tflm.measure(optimized).head_bytes
        assert report.board_head <= report.board_greedy_head
    if chain is None:
        return
    bundle = finalize(split_stages(optimized, chain, f"{name}.tflite"))
    check = verify_bundle(bundle, original, n_inputs=1 if name == PYTORCH else 2)
    assert check.ok, check.detail
    if name == "tinyengine_vww":  # float in, float out: the host runner takes and gives the source's own
        from converters.patching.edges import random_source_inputs
        from tinyvision.runtime.patch_runner import PatchRunner

        x = random_source_inputs(Model.from_bytes(original), 1, seed=7)
        got = PatchRunner(bundle).run_source(x)
        assert got.dtype == np.float32 and np.array_equal(got, tflm.run(original, [x])[0])
    arena = bundle.arena
    assert arena["shared"]["size"] < head
    if ceiling is not None:
        assert arena["size"] <= ceiling


@pytest.mark.slow
def test_the_pytorch_classifiers_last_convolution_runs_as_a_channel_stage():
    """The PyTorch MobileNetV2's 1280-channel last convolution and its global pool (ops 80 and 81, after the
    NCHW input edge) as a channel stage of 4 models, one interpreter at a time: each group model (a quarter of the
    channels' requantization data) and the tail after them hold under half the persistent bytes of the single tail
    model; bit-exact against TFLM running the original model."""
    from converters.patching import split_stages
    from converters.patching.bundle import finalize
    from converters.patching.channels import ChannelGroups
    from tinyvision.runtime.patch_runner import verify_bundle

    original = load(PYTORCH)
    whole_tail = finalize(split_stages(original, [(80, 1)], f"{PYTORCH}.tflite"), interpreters="one_at_a_time")
    bundle = finalize(split_stages(original, [(80, 1), (82, ChannelGroups(4))], f"{PYTORCH}.tflite"),
                      interpreters="one_at_a_time")
    groups = [p for p in bundle.patches if p.stage == 1]
    assert [(p.output.c, p.output.channels) for p in groups] == [(0, 320), (320, 320), (640, 320), (960, 320)]
    later = [bundle.models[i].persistent_bytes for i in {p.model for p in groups} | {bundle.tail}]
    assert max(later) < whole_tail.models[whole_tail.tail].persistent_bytes / 2
    check = verify_bundle(bundle, original, n_inputs=1)
    assert check.ok and check.stage_mismatches == 0, check.detail


def test_a_float_io_model_runs_whole_on_its_int8_core():
    """The unsplit bundle (what --patches=auto writes when no split helps) of a converted float-I/O model runs
    its int8 core with an offline plan of its own (the source's indexes the edge tensors too), no larger than
    the converted model's planned head."""
    from converters.optimize import optimize_tflite
    from converters.patching import whole_model
    from converters.patching.bundle import finalize
    from converters.planning import METADATA_NAME
    from tinyvision.runtime.patch_runner import verify_bundle

    original = load("tinyengine_vww")
    optimized, _ = optimize_tflite(original, "tinyengine_vww")
    bundle = finalize(whole_model(optimized, "tinyengine_vww.tflite"))
    assert bundle.kind == "whole_model" and not bundle.stages
    check = verify_bundle(bundle, original, n_inputs=1)
    assert check.ok, check.detail
    assert METADATA_NAME in Model.from_bytes(bundle.models[0].data).metadata
    assert bundle.arena["shared"]["size"] <= 97_520  # the converted model's planned head (TFLM's own: 161,472)


def test_person_detect_auto_below_a_third_of_the_head(tmp_path, capsys):
    """TFLM's person-detection model: `convert --patches=auto` (default limits, least static RAM) picks a
    chain of patch stages with the tail in segments that run in place on the stage buffers, whose shared
    region is at most a third of the unsplit head (18,432 B) and whose arena is under 46,000 B, within 15%
    extra MACs and 1.25x the unsplit model's flash image; checked bit-exact on TFLM against the original."""
    import types

    from converters.cli.bundle_convert import convert_to_bundle
    from converters.patching import read_bundle

    original = load("person_detect")
    out = tmp_path / "auto"
    convert_to_bundle(original, types.SimpleNamespace(
        model="person_detect.tflite", output=str(out), patches="auto", split=None, budget=None, flash_budget=None,
        board="nano33ble", max_mac_overhead=0.15, max_latency_overhead=None, max_flash_overhead=0.25,
        interpreters="one_at_a_time", verify=True, partial_execution=False, deep_search=False))
    printed = capsys.readouterr().out
    assert "chosen: n=" in printed and "verified: bit-exact" in printed
    picked = read_bundle(out)
    assert picked.arena["shared"]["size"] <= 18_432 and picked.arena["size"] <= 46_000
    assert picked.arena.get("in_place") and picked.stats["mac_overhead"] <= 0.15
    assert picked.stats["flash_bytes"] <= 1.25 * picked.stats["baseline"]["flash_bytes"]  # one flash image


def test_predict_and_evaluate_feed_a_grey_model_grey(tmp_path):
    """TFLM's person detection takes 96x96x1: predict and evaluate give it the grey of tinyvision's RGB images
    (the board's camera weights) in its own int8 convention (no metadata: pixel - 128)."""
    import subprocess
    import sys

    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(image)
    model = os.path.join(MODELS, "person_detect.tflite")
    cli = [sys.executable, "-m", "converters.cli.main"]
    done = subprocess.run([*cli, "predict", f"--model={model}", f"--image={image}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith(f"{image}: class ")
    done = subprocess.run([*cli, "evaluate", f"--model={model}", "--dataset=builtin_vww", "--samples=16"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "person_detect.tflite" in done.stdout and "accuracy" in done.stdout.lower()


def test_export_a_model_without_labels_names_its_classes_from_a_file(tmp_path):
    """export --arduino of a plain .tflite (run whole) with --labels: the sketch prints those names; a file with
    the wrong count is refused and nothing is written."""
    import glob
    import subprocess
    import sys

    model = os.path.join(MODELS, "person_detect.tflite")
    labels = tmp_path / "labels.txt"
    labels.write_text("no_person\nperson\n")
    cli = [sys.executable, "-m", "converters.cli.main", "export", "--arduino", f"--model={model}"]
    done = subprocess.run([*cli, f"--labels={labels}", f"--output={tmp_path / 'sketch'}"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    (plan_data,) = glob.glob(str(tmp_path / "sketch" / "*" / "plan_data.cpp"))
    with open(plan_data) as f:
        assert '"no_person",\n    "person",' in f.read()
    labels.write_text("person\n")
    done = subprocess.run([*cli, f"--labels={labels}", f"--output={tmp_path / 'refused'}"], capture_output=True,
                          text=True)
    assert done.returncode == 1 and done.stderr.strip().endswith("1 class names given, the model has 2 outputs")
    assert not (tmp_path / "refused").exists()
