"""The board's own runtime on the board's TFLM library, in ONE arena, against the host PatchRunner.

Exported sketches (the .ino, tflm_app's runtime and TFLM glue, generated plan, model arrays and
test image) are built by tinyvision.runtime.board against Chirale_TensorFlowLite (the library the
Arduino IDE installs), found at ../shared/third_party/Chirale_TensorFlowLite beside the repository,
for the Cortex-M4F with arm-none-eabi-g++ and the library's CMSIS-NN kernels, run under
qemu-system-arm (mps2-an386, 256 KB of RAM enforced by the MPU, -icount), and for the host with
g++ -m32 (where g++-multilib is installed): the whole bundle in one arena, as on the board (the
module is skipped without the library, the arm toolchain or qemu).

Every stage buffer must equal the host PatchRunner's (tflite-micro, the reference) bit for bit, the
scores too (the models' rescaling global MEANs rewritten by converters.passes.board_mean, as convert
rewrites them, which the older library would compute through float), the arena bytes TFLM touched must stay within the
exported arena constant, and the C++ Init must refuse tampered plans. The library is built once per cache ($TINYVISION_CACHE or
~/.cache/tinyvision), the sketches' objects once per test session. A tail with two outputs (a detector with one
output per scale) runs the same way, every output bit-exact. How the harness's output is read needs none of that
and always runs.
"""
import copy
import os
import shutil

import numpy as np
import pytest

from conftest import int8_tflite, randomize, two_output_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "third_party", "Chirale_TensorFlowLite")

HAS_M4 = all(shutil.which(t) for t in ("arm-none-eabi-g++", "qemu-system-arm"))
needs_board = pytest.mark.skipif(not os.path.isdir(LIB_DIR) or not HAS_M4,
                                 reason="needs arm-none-eabi-g++, qemu-system-arm and the board's TFLM library at "
                                        "../shared/third_party")


def _builds_32bit_programs():
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <cstdio>\nint main() { std::puts(\"ok\"); }\n")
        return subprocess.run(["g++", "-m32", src, "-o", os.path.join(tmp, "probe")], capture_output=True).returncode == 0


# The board's build of the library run under qemu as the board runs it, and the host's 32-bit build (g++-multilib):
# the same code and arena plan on two kernel sets (CMSIS-NN's DSP paths and its portable C paths).
TARGETS = ("host", "cortex-m4") if shutil.which("g++") and _builds_32bit_programs() else ("cortex-m4",)


@pytest.fixture(scope="session")
def obj_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sketch-objects"))


def board_exact(data):
    """An int8 model with its rescaling global MEANs rewritten for the board, as ``convert`` rewrites it."""
    from converters.passes.board_mean import board_exact_means_tflite

    return board_exact_means_tflite(data)[0]


def write_finalized(bundle, folder, **finalize_options):
    from converters.patching import write_bundle
    from converters.patching.bundle import finalize

    write_bundle(finalize(bundle, **finalize_options), folder)
    return str(folder)


def run_everywhere(bundle_dir, obj_cache, image=None):
    from tinyvision.runtime.board import run_bundle

    return run_bundle(bundle_dir, TARGETS, LIB_DIR, image=image, obj_cache=obj_cache)


def assert_board_exact(results, bundle_dir):
    """Every stage buffer bit-exact on every target; the scores too, unless the bundle keeps an operator the
    board's library computes differently (converters.export.board_kernels), which then differs on the board."""
    from converters.export.board_kernels import bundle_board_differences
    from converters.patching import read_bundle

    bundle = read_bundle(bundle_dir)
    arena_size = bundle.arena["size"]
    for target, e in results.items():
        assert e.stage_mismatches == [0] * len(e.host_stages), (target, e.stage_mismatches)
        if not bundle_board_differences(bundle):  # the library's own MEAN, on the host build as on the board
            assert e.score_diff == 0, (target, e.run.scores, e.host_scores)
        assert e.run.arena["size"] == arena_size and 0 < e.run.arena["used"] <= arena_size, (target, e.run.arena)
        assert e.run.predicted == int(np.argmax(e.host_scores))
    if "cortex-m4" in results:
        counts = results["cortex-m4"].run.instructions()
        assert all(counts[f"stage {k}"] > 0 for k in range(len(results["cortex-m4"].host_stages)))
        assert counts["tail"] > 0 and counts["setup"] > 0


# ---------------------------------------------------------------- MobileNetV2


@pytest.fixture(scope="module")
def mobilenet48():
    """keras MobileNetV2(0.35, 48x48x3, random weights) int8 up to block 15 (2x2x56), global average pool and a
    2-class dense head, and its three stage cuts: the whole network without its last block and 1280-channel
    convolution, whose weights would put the 3-stage bundles over the Nano's flash."""
    import tensorflow as tf

    from converters.ir import Model

    tf.keras.utils.set_random_seed(0)
    base = tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(48, 48, 3), weights=None, include_top=False)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(base.get_layer("block_15_add").output)
    keras_model = tf.keras.Model(base.input, tf.keras.layers.Dense(2)(pooled))
    data = board_exact(int8_tflite(keras_model, samples=3))
    ops = Model.from_bytes(data).main.ops
    cuts = [next(i for i, op in enumerate(ops) if name in op.outputs[0].name) + 1
            for name in ("block_1_project/", "block_2_add", "block_5_add")]
    return data, cuts


@pytest.fixture(scope="module", params=[(n, mode) for n in (1, 2, 3) for mode in ("resident", "one_at_a_time")],
                ids=lambda p: f"{p[0]}_stage-{p[1]}")
def mobilenet_bundle(request, mobilenet48, tmp_path_factory):
    from converters.patching import split_stages

    data, cuts = mobilenet48
    num_stages, mode = request.param
    grids = [2, 2, 1][:num_stages]  # three stages: the last a 1x1 segment, run in place on the stage buffers
    bundle = split_stages(data, list(zip(cuts, grids)))
    return write_finalized(bundle, tmp_path_factory.mktemp("board") / f"mbv2_{num_stages}_{mode}",
                             interpreters=mode)


@needs_board
def test_mobilenet_bundles_run_board_exact(mobilenet_bundle, obj_cache):
    import json

    arena = json.load(open(os.path.join(mobilenet_bundle, "plan.json")))["arena"]
    assert ("in_place" in arena) == mobilenet_bundle.endswith(("3_resident", "3_one_at_a_time"))
    assert_board_exact(run_everywhere(mobilenet_bundle, obj_cache), mobilenet_bundle)


@needs_board
@pytest.mark.parametrize("mode", ["resident", "one_at_a_time"])
def test_partially_executed_bundle_runs_board_exact(mode, mobilenet48, tmp_path, obj_cache):
    """Two 2x2 stages whose patches run their strided expansions a group of channels at a time (convert
    --partial_execution; the tail's would not shrink its plan, scratch included): many more tensors per model,
    whose AllocateTensors temporaries (the planner's 40 B per buffer among them) must fit where the interpreters
    are created: the shared region when resident."""
    from converters.patching import split_stages
    from converters.planning import allocation_temp_bytes

    data, cuts = mobilenet48
    bundle = split_stages(data, list(zip(cuts[:2], [2, 2])), partial_expansions=True)
    graphs = [m.graph() for m in bundle.models]
    assert all(sum(op.opcode == "CONCATENATION" for op in g.ops) >= 2
               for m, g in zip(bundle.models, graphs) if m.name.startswith("patch_"))
    folder = write_finalized(bundle, tmp_path / f"partial_{mode}", interpreters=mode)
    if mode == "resident":
        import json

        arena = json.load(open(os.path.join(folder, "plan.json")))["arena"]
        assert arena["shared"]["size"] >= max(allocation_temp_bytes(g) for g in graphs)
    assert_board_exact(run_everywhere(folder, obj_cache), folder)


# ---------------------------------------------------------------- seed-003 tunnels, random CNN


@pytest.fixture(scope="module")
def seed003_int8():
    import models
    from converters.quantize import to_int8_tflite
    from tinyvision.data import synthetic_arrays

    stages = ((1, 8, 1, 1, 3, 1), (6, 16, 1, 2, 3, 2))
    model = randomize(models.build("seed003_imagenet", resolution=64, patch_size=16, stages=stages, head_units=16,
                                   classes=5))
    images, _ = synthetic_arrays(4, resolution=64)
    return board_exact(to_int8_tflite(model, images, max_samples=4))


@needs_board
@pytest.mark.parametrize("segments, tiled, mode", [
    (None, None, "resident"), ([3, 10], None, "one_at_a_time"), ([3, 10], None, "resident"),
    ([3, 10], {0: 2, 1: 2}, "one_at_a_time")])
def test_seed003_tunnels_run_board_exact(segments, tiled, mode, seed003_int8, tmp_path, obj_cache):
    """The 17 tunnels whole, and each cut into three segments run tunnel after tunnel: every segment reads its
    own link stage (the last one into its box of the merged stage), the middle one in place, or the first two
    tile by tile (windows of the image, then of the first link stage)."""
    from converters.patching import read_bundle, split_tunnels

    split = split_tunnels(seed003_int8, segments=segments, tiled=tiled)
    folder = write_finalized(split, tmp_path / "tunnels", interpreters=mode)
    bundle = read_bundle(folder)
    assert len(bundle.stages) == 1 + 2 * 17 * bool(segments)
    assert len(bundle.arena.get("in_place", [])) == 17 * bool(segments and not tiled)
    assert len(bundle.patches) == 17 * (1 + 2 * bool(segments) + 3 * len(tiled or {}))  # 2x2 tiles: 3 more
    assert_board_exact(run_everywhere(folder, obj_cache), folder)


@needs_board
def test_random_cnn_runs_board_exact(tmp_path, obj_cache):
    from test_patching import build_random_cnn

    from converters.patching import max_stage_ops, split_patch_stage

    specs = [("conv", 8, 3, 2, "same", "relu6"), ("residual", 3), ("dw", 3, 1, "same"), ("maxpool", 2, 1, "valid"),
             ("conv", 8, 1, 1, "same", "relu")]
    data = int8_tflite(build_random_cnn((23, 29), 3, specs, seed=7), samples=4)
    up_to_the_pool = max_stage_ops(data)  # the rewritten pool is a 1x1 DEPTHWISE_CONV_2D no 2x3 grid can cut
    folder = write_finalized(split_patch_stage(board_exact(data), up_to_the_pool, (2, 3)), tmp_path / "random_cnn")
    assert_board_exact(run_everywhere(folder, obj_cache), folder)


@needs_board
def test_channel_stage_runs_board_exact(tmp_path, obj_cache):
    """A classifier's last convolution and its board-exact global pool (a DEPTHWISE_CONV_2D) as a channel stage:
    each of 3 group models fills its channel range of the pooled buffer, one interpreter at a time."""
    import tensorflow as tf

    from converters.ir import Model
    from converters.patching import split_stages
    from converters.patching.channels import ChannelGroups

    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    image = tf.keras.Input((24, 24, 3))
    features = L.Conv2D(96, 1, activation="relu6")(L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image))
    data = board_exact(int8_tflite(tf.keras.Model(image, L.Dense(3)(L.GlobalAveragePooling2D()(features))), samples=3))
    assert [op.opcode for op in Model.from_bytes(data).main.ops[1:3]] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    folder = write_finalized(split_stages(data, [(1, 2), (3, ChannelGroups(3))]), tmp_path / "channels",
                             interpreters="one_at_a_time")
    assert_board_exact(run_everywhere(folder, obj_cache), folder)


# ---------------------------------------------------------------- a tail with several outputs


@pytest.fixture(scope="module")
def two_output_model():
    """``conftest.two_output_cnn``: heads of 16x16x12 and 8x8x12."""
    return two_output_cnn(12)


@needs_board
@pytest.mark.parametrize("mode", ["resident", "one_at_a_time"])
def test_two_output_tail_runs_board_exact(mode, two_output_model, tmp_path, obj_cache):
    """2x2 patches of the first convolution, then a tail with both outputs: every output bit-exact with the host
    PatchRunner, in the model's output order, one sketch line per output."""
    from converters.patching import read_bundle, split_patch_stage, split_points

    folder = write_finalized(split_patch_stage(two_output_model, split_points(two_output_model)[0], 2),
                             tmp_path / "two_outputs", interpreters=mode)
    bundle = read_bundle(folder)
    shapes = bundle.models[bundle.tail].output_shapes
    assert len(shapes) == 2
    sizes = [int(np.prod(s)) for s in shapes]
    for target, e in run_everywhere(folder, obj_cache).items():
        assert e.stage_mismatches == [0] and e.score_diff == 0, (target, e.stage_mismatches, e.score_diff)
        assert [o.size for o in e.run.outputs] == sizes, target
        np.testing.assert_array_equal(np.concatenate(e.run.outputs), e.run.scores)
        host = np.split(e.host_scores, np.cumsum(sizes)[:-1])
        for got, want in zip(e.run.outputs, host):
            np.testing.assert_array_equal(got, want)
        for i, (shape, want) in enumerate(zip(shapes, host)):
            line = f"output={i} shape={'x'.join(str(d) for d in shape)} max="
            assert any(ln.startswith(line) and ln.endswith(f" at={int(np.argmax(want))}") for ln in e.run.lines), (
                target, e.run.lines)
        assert e.run.predicted == -1 and e.run.arena["used"] <= e.run.arena["size"]


@needs_board
def test_cpp_init_refuses_wrong_output_counts_and_shapes(two_output_model, tmp_path, obj_cache):
    """A plan that gives the two-output tail one output, its outputs in the other order, or a patch model two
    outputs: the C++ Init refuses each (the model's outputs differ from the plan's, or ValidatePlan)."""
    from converters.export.arduino import export_arduino, model_image, render_plan_data
    from converters.patching import read_bundle, split_patch_stage, split_points
    from tinyvision.runtime.board import run_sketch

    folder = write_finalized(split_patch_stage(two_output_model, split_points(two_output_model)[0], 2),
                             tmp_path / "bundle")
    sketch = export_arduino(folder, tmp_path / "sketch", sketch_name="outputs", verbose=False).sketch_dir
    good = run_sketch(sketch, TARGETS[0], LIB_DIR, obj_cache=obj_cache)
    assert good.error is None and len(good.outputs) == 2
    bundle = read_bundle(folder)
    tail = bundle.models[bundle.tail]
    cases = {
        "one output": lambda b: setattr(b.models[b.tail], "output_shapes", tail.output_shapes[:1]),
        "outputs swapped": lambda b: setattr(b.models[b.tail], "output_shapes", tail.output_shapes[::-1]),
        "a patch model with two outputs": lambda b: setattr(b.models[0], "output_shapes",
                                                            b.models[0].output_shapes * 2),
    }
    refused = {"one output": "differ from the plan", "outputs swapped": "differ from the plan",
               "a patch model with two outputs": "a patch model needs one output, a tail 1..8"}
    for name, edit in cases.items():
        tampered = copy.deepcopy(bundle)
        edit(tampered)
        copy_dir = tmp_path / name.replace(" ", "_")
        shutil.copytree(sketch, copy_dir)
        _, source = render_plan_data(tampered, model_image(bundle))
        (copy_dir / "plan_data.cpp").write_text(source)
        run = run_sketch(str(copy_dir), TARGETS[0], LIB_DIR, obj_cache=obj_cache)
        assert run.error is not None and refused[name] in run.error and run.scores is None, (name, run.lines)


# ---------------------------------------------------------------- the harness's output, read


HARNESS_OUTPUT = """harness instructions
clock setup0 1200
clock stage0 5000
buffer 0 00017f80
clock tail0 3000
buffer scores 0aff
output=0 shape=1x1x2 max=0.1000 at=0
output=1 shape=3 max=0.2000 at=1
outputs=2 latency_ms=0.0 patches_ms=0.0 tail_ms=0.0 copy_ms=0.5 create_ms=1.5 arena_used=900/1024
arena size=1024 shared=600 persistent=300 used=900 creation=0 tflm_max=700
harness exit 0
"""


def test_parse_output_reads_every_tail_output():
    """``buffer scores`` is output 0, ``buffer scores<i>`` output i: ``outputs`` holds each, ``scores`` their
    concatenation; the clock of the tail is read once."""
    from tinyvision.runtime.board import parse_output

    text = HARNESS_OUTPUT.replace("buffer scores 0aff\n", "buffer scores 0aff\nbuffer scores1 80017f\n")
    run = parse_output(text, "cortex-m4")
    assert run.error is None and run.counts_instructions
    assert [o.tolist() for o in run.outputs] == [[10, -1], [-128, 1, 127]]
    assert run.scores.dtype == np.int8 and run.scores.tolist() == [10, -1, -128, 1, 127]
    assert [s.tolist() for s in run.stages] == [[0, 1, 127, -128]]
    assert run.clocks == {"setup0": 1200, "stage0": 5000, "tail0": 3000}
    assert run.predicted == -1 and run.copy_ms == 0.5 and run.create_ms == 1.5
    assert run.lines[:2] == ["output=0 shape=1x1x2 max=0.1000 at=0", "output=1 shape=3 max=0.2000 at=1"]
    assert run.instructions()["inference"] == 8000

    one = parse_output(HARNESS_OUTPUT, "host")  # one output, as every single-output sketch prints it
    assert [o.tolist() for o in one.outputs] == [[10, -1]] and one.scores.tolist() == [10, -1]

    from tinyvision.errors import TinyVisionError

    with pytest.raises(TinyVisionError, match=r"printed tail outputs \[0, 2\], not 0 to 1"):
        parse_output(text.replace("buffer scores1 ", "buffer scores2 "), "host")
    with pytest.raises(TinyVisionError, match=r"without a result: qemu: fatal: Lockup: can't escalate 3 to HardFault$"):
        parse_output("", "cortex-m4", "qemu: fatal: Lockup: can't escalate 3 to HardFault\n\nR00=00000084 R01=00000000\n"
                                      "FPSCR: 00000000\n")
    failed = parse_output("harness wall clock\ntinyvision error: Invoke failed (index 4)\nharness exit 1\n", "host")
    assert failed.scores is None and failed.outputs == [] and failed.error == "Invoke failed (index 4)"


def test_host_outputs_flatten_as_the_board_prints_them():
    """The host PatchRunner's outputs (one array, or a list for several, each with its batch dimension) compare
    with the board's concatenated scores."""
    from tinyvision.errors import TinyVisionError
    from tinyvision.runtime.board import compare_with_host, flat_outputs, parse_output

    single = np.array([[[[10, -1]]]], np.int8)
    several = [single, np.array([[-128, 1, 127]], np.int8)]
    assert flat_outputs(single).tolist() == [10, -1]
    assert flat_outputs(several).tolist() == flat_outputs(tuple(several)).tolist() == [10, -1, -128, 1, 127]
    run = parse_output(HARNESS_OUTPUT.replace("buffer scores 0aff\n", "buffer scores 0aff\nbuffer scores1 80017f\n"),
                       "host")
    stage = [np.array([0, 1, 127, -128], np.int8)]
    e = compare_with_host(run, flat_outputs(several), stage)
    assert e.bit_exact and e.stage_mismatches == [0]
    e = compare_with_host(run, flat_outputs([single, np.array([[-128, 3, 127]], np.int8)]), stage)
    assert not e.bit_exact and e.score_diff == 2
    with pytest.raises(TinyVisionError, match="5 scores; the host 1 and 2"):
        compare_with_host(run, flat_outputs(single), stage)


# ---------------------------------------------------------------- tampered plans: the C++ Init refuses them


def _tampered_sketches(bundle):
    """{case: bundle whose plan is tampered}, for the cases of a bundle the device runtime can see."""
    cases = {}

    def case(name, edit):
        b = copy.deepcopy(bundle)
        edit(b)
        cases[name] = b

    def swap_stage_offsets(b):
        s = b.arena["stages"]
        s[0]["offset"], s[-1]["offset"] = s[-1]["offset"], s[0]["offset"]

    def tiny_sections(b):
        for p in b.arena["persistent"]:
            p["size"] = 16

    def negative_head(b):
        b.models[0].nonpersistent_bytes = -5

    if len(bundle.stages) > 1:
        case("stage offsets swapped", swap_stage_offsets)
    case("persistent sections of 16 B", tiny_sections)
    case("a model's nonpersistent_bytes -5", negative_head)
    case("offline_plans false on a planned bundle", lambda b: b.arena.update(offline_plans=False))
    if bundle.arena.get("in_place"):
        case("in-place models not listed", lambda b: b.arena.pop("in_place"))
        case("a 2x2 patch model listed in place", lambda b: b.arena.update(in_place=[0] + b.arena["in_place"]))
    if bundle.arena.get("interpreters") == "one_at_a_time":
        case("temp_reserve 0", lambda b: b.arena.update(temp_reserve=0))
    case("arena.size beyond the sketch's arena", lambda b: b.arena.update(size=b.arena["size"] + 16))
    return cases


@needs_board
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", ["resident", "one_at_a_time"])
def test_cpp_init_refuses_tampered_plans(mode, target, mobilenet48, tmp_path, obj_cache):
    from converters.export.arduino import export_arduino, model_image, render_plan_data
    from converters.export.c_array import c_identifier
    from converters.patching import read_bundle, split_stages, write_bundle
    from converters.patching.bundle import finalize
    from tinyvision.runtime.board import run_sketch

    data, cuts = mobilenet48
    folder = tmp_path / "bundle"
    write_bundle(finalize(split_stages(data, [(cuts[0], 2), (cuts[1], 1)]), interpreters=mode), folder)  # 1x1: in place
    sketch = export_arduino(folder, tmp_path / "sketch", sketch_name="tampered", verbose=False).sketch_dir
    good = run_sketch(sketch, target, LIB_DIR, obj_cache=obj_cache)
    assert good.error is None and good.scores is not None
    bundle = read_bundle(folder)
    assert bundle.arena["in_place"] == [bundle.patches[-1].model]  # the segment's plan reads and writes in place
    flash = model_image(bundle)
    for name, tampered in _tampered_sketches(bundle).items():
        copy_dir = tmp_path / c_identifier(name)
        shutil.copytree(sketch, copy_dir)
        _, source = render_plan_data(tampered, flash)
        (copy_dir / "plan_data.cpp").write_text(source)  # plan_data.h keeps the sketch's arena constant
        run = run_sketch(str(copy_dir), target, LIB_DIR, obj_cache=obj_cache)
        assert run.error is not None and run.scores is None, f"{name}: accepted by the C++ Init: {run.lines}"


# ---------------------------------------------------------------- tinyvision emulate


def _cli(*args):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=1200)


@needs_board
def test_emulate_command(mobilenet48, tmp_path):
    from converters.patching import split_stages

    data, cuts = mobilenet48
    folder = write_finalized(split_stages(data, [(cuts[0], 2)]), tmp_path / "bundle")
    done = _cli("emulate", f"--model={folder}", f"--arduino_lib={LIB_DIR}")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "class=" in out and "(equal)" in out and "0: bit-exact" in out, out
    assert "instructions per inference" in out and "ms at 64 MHz" in out and "stage 0" in out, out
    assert "B touched" in out, out


@needs_board
def test_emulate_runs_a_whole_model_on_a_larger_map(tmp_path, mobilenet48):
    """A .tflite runs whole; exported for the mps2-an386 profile the emulator gives it 4 MB of RAM."""
    model = tmp_path / "model.tflite"
    model.write_bytes(mobilenet48[0])
    done = _cli("emulate", f"--model={model}", "--board=mps2-an386", f"--arduino_lib={LIB_DIR}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4,096 KB RAM as mps2-an386" in done.stdout and "(equal)" in done.stdout, done.stdout
    assert "none (a whole model)" in done.stdout, done.stdout


@needs_board
def test_emulate_refuses_what_it_cannot_run(tmp_path):
    done = _cli("emulate", f"--model={tmp_path / 'missing.tflite'}", f"--arduino_lib={LIB_DIR}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    done = _cli("emulate", f"--model={tmp_path}", f"--arduino_lib={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    done = _cli("emulate", f"--model={tmp_path}", "--board=uno", f"--arduino_lib={LIB_DIR}")
    assert done.returncode == 1 and "unknown board" in done.stderr, done.stderr
