"""tinyvision.analysis: the analytic arena plan against TFLM's measured head, MACs/params, the plot."""
import numpy as np
import pytest

from conftest import int8_tflite
from converters.ir import Graph, Model, Op, Quantization, Tensor
from tinyvision.analysis import greedy_offsets, memory_profile, model_cost, plot_memory
from tinyvision.analysis.memory import align_up
from tinyvision.runtime import tflm


@pytest.fixture(scope="module")
def branchy_int8():
    """Inception-style block (concat of 1x1 / 3x3 / pool branches), a residual ADD, avg pool, MEAN, dense."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(2)
    L = tf.keras.layers
    x_in = tf.keras.Input((20, 20, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    a = L.Conv2D(4, 1, activation="relu")(x)
    b = L.Conv2D(6, 3, padding="same", activation="relu")(L.Conv2D(4, 1)(x))
    c = L.Conv2D(6, 1)(L.MaxPooling2D(3, strides=1, padding="same")(x))
    x = L.Concatenate()([a, b, c])
    y = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Add()([x, y])
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(4)(x)
    return int8_tflite(tf.keras.Model(x_in, out), samples=4)


def random_dag_model(seed, n_ops=16):
    """A random int8 DAG built directly in the IR: CONV_2D / DEPTHWISE / ADD / CONCATENATION / MAX_POOL, then MEAN.

    Every unconsumed tensor is a graph output; the tensor list is shuffled, because
    TFLM's planner breaks ties between equal sizes by file order.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    rng = np.random.default_rng(seed)
    names = iter(range(10_000))

    def act(shape):
        q = Quantization(np.array([0.05], np.float32), np.array([0], np.int64))
        return Tensor(f"t{next(names)}", tuple(int(d) for d in shape), np.dtype(np.int8), quantization=q)

    def const(data, scale=None, axis=0):
        q = None if scale is None else Quantization(np.asarray(scale, np.float32), np.zeros(len(scale), np.int64), axis)
        return Tensor(f"c{next(names)}", data.shape, data.dtype, data=data, quantization=q)

    side = int(rng.choice([6, 8, 10]))
    x = act((1, side, side, int(rng.choice([3, 4, 8]))))
    tensors, ops, avail = [x], [], [x]
    for _ in range(n_ops):
        a = avail[int(rng.integers(len(avail)))]
        _, h, w, c = a.shape
        kind = str(rng.choice(["conv", "conv", "dw", "add", "add", "concat", "pool"]))
        partners = {
            "add": [t for t in avail if t.shape == a.shape and t is not a],
            "concat": [t for t in avail if t.shape[1:3] == a.shape[1:3] and t is not a],
        }
        if (kind in partners and not partners[kind]) or (kind == "pool" and min(h, w) < 2):
            kind = "conv"
        if kind == "conv":
            cout, k = int(rng.choice([4, 8, 12])), int(rng.choice([1, 3]))
            stride = int(rng.choice([1, 1, 2])) if h > 2 else 1
            wq = rng.uniform(0.005, 0.02, cout)
            filt = const(rng.integers(-127, 128, (cout, k, k, c), dtype=np.int8), wq)
            bias = const(rng.integers(-100, 100, cout, dtype=np.int32), 0.05 * wq)
            out = act((1, -(-h // stride), -(-w // stride), cout))
            opt = schema.Conv2DOptionsT()
            opt.padding, opt.strideH, opt.strideW = schema.Padding.SAME, stride, stride
            opt.fusedActivationFunction = int(rng.choice([0, 1, 3]))
            ops.append(Op("CONV_2D", [a, filt, bias], [out], opt, version=3))
            tensors += [filt, bias]
        elif kind == "dw":
            wq = rng.uniform(0.005, 0.02, c)
            filt = const(rng.integers(-127, 128, (1, 3, 3, c), dtype=np.int8), wq, axis=3)
            bias = const(rng.integers(-100, 100, c, dtype=np.int32), 0.05 * wq)
            out = act(a.shape)
            opt = schema.DepthwiseConv2DOptionsT()
            opt.padding, opt.strideH, opt.strideW, opt.depthMultiplier = schema.Padding.SAME, 1, 1, 1
            opt.dilationHFactor = opt.dilationWFactor = 1
            ops.append(Op("DEPTHWISE_CONV_2D", [a, filt, bias], [out], opt, version=3))
            tensors += [filt, bias]
        elif kind == "add":
            out = act(a.shape)
            ops.append(Op("ADD", [a, partners["add"][int(rng.integers(len(partners["add"])))]], [out],
                          schema.AddOptionsT()))
        elif kind == "concat":
            b = partners["concat"][int(rng.integers(len(partners["concat"])))]
            out = act((1, h, w, c + b.shape[3]))
            opt = schema.ConcatenationOptionsT()
            opt.axis = 3
            ops.append(Op("CONCATENATION", [a, b], [out], opt))
        else:
            out = act((1, h // 2, w // 2, c))
            opt = schema.Pool2DOptionsT()
            opt.padding = schema.Padding.VALID
            opt.strideH = opt.strideW = opt.filterHeight = opt.filterWidth = 2
            ops.append(Op("MAX_POOL_2D", [a], [out], opt))
        tensors.append(out)
        avail.append(out)
    last = ops[-1].outputs[0]
    axis, mean = const(np.array([1, 2], np.int32)), act((1, last.shape[3]))
    opt = schema.ReducerOptionsT()
    opt.keepDims = False
    ops.append(Op("MEAN", [last, axis], [mean], opt))
    tensors += [axis, mean]
    consumed = {id(t) for op in ops for t in op.inputs if t is not None}
    outputs = [t for t in avail[1:] if id(t) not in consumed] + [mean]
    order = rng.permutation(len(tensors))
    return Model([Graph(ops=ops, inputs=[x], outputs=outputs, tensors=[tensors[i] for i in order])]).to_bytes()


def assert_valid_plan(profile):
    """No two buffers alive at the same time overlap in the arena; the head covers every buffer."""
    buffers = profile.buffers
    for i, a in enumerate(buffers):
        assert a.offset >= 0 and a.size == align_up(a.bytes)
        for b in buffers[i + 1 :]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    assert profile.head_bytes == max(b.offset + b.size for b in buffers)
    assert profile.peak_bytes <= profile.head_bytes


# ---------------------------------------------------------------- analytic head == TFLM head


@pytest.mark.parametrize("kind", ["per_tensor", "per_channel"])
def test_mobilenet_v2_head_matches_tflm(mobilenet_v2, kind):
    measured = tflm.measure(mobilenet_v2[kind]).head_bytes
    profile = memory_profile(mobilenet_v2[kind])
    assert abs(profile.head_bytes - measured) <= 0.01 * measured
    assert profile.head_bytes == measured == 311_040
    assert_valid_plan(profile)
    # The peak is the first inverted-residual block: 72x72x48 expansion in, 36x36x48 out, plus its input.
    peak = profile.ops[profile.peak_op]
    assert peak.opcode == "DEPTHWISE_CONV_2D" and peak.live_bytes == 311_040


def test_keras_branches_match_tflm(branchy_int8):
    profile = memory_profile(branchy_int8)
    assert profile.head_bytes == tflm.measure(branchy_int8).head_bytes
    assert_valid_plan(profile)
    mean = next(o for o in profile.ops if o.opcode == "MEAN")
    scratch = [b for b in profile.buffers if b.kind == "scratch"]
    # Reference MEAN (int8): int32 accumulator per output element, int32 per input dim, per axis.
    assert [b.bytes for b in scratch] == [4 * 16, 4 * 4, 4 * 2]
    assert mean.scratch_bytes == sum(align_up(b.bytes) for b in scratch)


def test_random_graphs_match_tflm_exactly():
    models = [random_dag_model(seed) for seed in range(16)]
    measured = tflm.measure_many(models)  # one subprocess for all
    heads_above_peak = 0
    for seed, (data, report) in enumerate(zip(models, measured)):
        profile = memory_profile(data)
        assert profile.head_bytes == report.head_bytes, f"seed {seed}"
        assert_valid_plan(profile)
        heads_above_peak += profile.head_bytes > profile.peak_bytes
    assert heads_above_peak > 0  # some plans fragment: the greedy replica, not just the peak, is tested


def test_profile_of_a_rewritten_ir_model_matches_its_export(branchy_int8):
    model = Model.from_bytes(branchy_int8)
    assert memory_profile(model).head_bytes == memory_profile(model.to_bytes()).head_bytes


# ---------------------------------------------------------------- planner and live memory by hand


def test_greedy_planner_by_hand():
    # (size, first, last, offline offset or -1), in the order TFLM adds them.
    requirements = [(32, 0, 1, -1), (16, 1, 2, -1), (32, 2, 3, -1), (16, 0, 3, -1)]
    # Largest first; equal sizes: the later-added buffer first (TFLM fills its sort array from the back).
    # #2 -> 0; #0 (alive 0-1, no overlap with #2) -> 0; #3 -> 32; #1 overlaps all three -> 48.
    assert greedy_offsets(requirements) == [0, 48, 0, 32]
    assert greedy_offsets([(16, 0, 0, 64), (16, 0, 0, -1)]) == [64, 0]  # offline offsets are kept
    assert greedy_offsets([]) == []


def test_live_memory_of_a_chain():
    from tensorflow.lite.python import schema_py_generated as schema

    q = Quantization(np.array([0.1], np.float32), np.array([0], np.int64))
    x = Tensor("x", (1, 5, 5, 3), np.dtype(np.int8), quantization=q)  # 75 B -> 80
    y = Tensor("y", (1, 5, 5, 3), np.dtype(np.int8), quantization=q)
    z = Tensor("z", (1, 2, 2, 3), np.dtype(np.int8), quantization=q)  # 12 B -> 16
    pool = schema.Pool2DOptionsT()
    pool.padding, pool.strideH, pool.strideW, pool.filterHeight, pool.filterWidth = schema.Padding.VALID, 2, 2, 2, 2
    model = Model([Graph([Op("RELU", [x], [y]), Op("MAX_POOL_2D", [y], [z], pool)], [x], [z], [x, y, z])])
    profile = memory_profile(model)
    assert [o.live_bytes for o in profile.ops] == [160, 96]
    assert [o.live for o in profile.ops] == [("x", "y"), ("y", "z")]
    assert profile.peak_op == 0 and profile.peak_bytes == 160 and profile.head_bytes == 160
    assert profile.head_bytes == tflm.measure(model.to_bytes()).head_bytes
    assert model_cost(model).ops[1].macs == 2 * 2 * 3 * 4


# ---------------------------------------------------------------- MACs, params, plot


def test_macs_and_params(mobilenet_v2):
    cost = model_cost(mobilenet_v2["per_tensor"])
    first, last = cost.ops[0], cost.ops[-1]
    assert first.opcode == "CONV_2D" and first.output_shape == (1, 72, 72, 16)
    assert first.macs == 72 * 72 * 16 * 3 * 3 * 3
    assert first.params == 16 * 3 * 3 * 3 + 16  # weights + bias
    # The classifier's bias is all zeros (random init), which the converter drops.
    assert last.opcode == "FULLY_CONNECTED" and last.macs == 1280 * 1000 and last.params == 1280 * 1000
    dw = next(o for o in cost.ops if o.opcode == "DEPTHWISE_CONV_2D")
    assert dw.macs == 72 * 72 * 16 * 9
    assert 25e6 < cost.macs < 28e6  # ~26 M MACs for MobileNetV2 0.35 at 144x144
    assert cost.params == sum(o.params for o in cost.ops)
    assert 0 < cost.weight_bytes < len(mobilenet_v2["per_tensor"])


def test_memory_plot_is_written(tmp_path, branchy_int8):
    profile = memory_profile(branchy_int8)
    path = plot_memory(profile, tmp_path / "memory.png", budget_bytes=profile.head_bytes // 2, title="branchy")
    data = (tmp_path / "memory.png").read_bytes()
    assert str(path).endswith("memory.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_board_arena_adds_the_cmsis_nn_scratch(tmp_path):
    """One 5x5 depthwise convolution on 8x8x64: the host's reference kernel requests no scratch, the board's
    CMSIS-NN kernel (arm_depthwise_conv_wrapper_s8_get_buffer_size) an int16 im2col of 64 x 5 x 5, which
    cannot share bytes with the live input and output. analyze and export size the board's arena with it."""
    import json
    import os
    import subprocess
    import sys

    import tensorflow as tf

    from tinyvision.analysis.report import analyze_tflite, board_arena

    tf.keras.utils.set_random_seed(0)
    x = tf.keras.Input((8, 8, 64))
    data = int8_tflite(tf.keras.Model(x, tf.keras.layers.DepthwiseConv2D(5, padding="same")(x)), samples=2)
    assert [op.opcode for op in Model.from_bytes(data).main.ops] == ["DEPTHWISE_CONV_2D"]
    result, _ = analyze_tflite(data, "dw5x5", verify=False)
    activations = 2 * 8 * 8 * 64
    im2col = 64 * 5 * 5 * 2
    assert result["head_bytes"] == result["analytic_head_bytes"] == activations
    assert result["board_head_bytes"] == activations + im2col
    assert result["board_arena_bytes"] == result["min_arena_bytes"] + im2col
    assert board_arena(data, "dw5x5") == (result["board_arena_bytes"], result["min_arena_bytes"])

    model = tmp_path / "dw5x5.tflite"
    model.write_bytes(data)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "export", f"--model={model}",
                           f"--output={tmp_path / 'c'}"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"arena size constant: {result['board_arena_bytes']:,} B" in done.stdout
    assert f"+ {im2col:,} B of the board's CMSIS-NN scratch" in done.stdout
    assert json.dumps(result)  # JSON-ready


def test_persistent_bytes_per_operator_and_kind(branchy_int8):
    """analyze splits TFLM's tail by the kinds TFLM records and by the operators that add it (prefix models on
    TFLM): the per-operator bytes add up to the tail, and each convolution holds at least its per-channel
    multipliers and shifts (8 B per output channel)."""
    from converters.ir import Model
    from tinyvision.analysis.report import analyze_tflite, format_table

    result, _ = analyze_tflite(branchy_int8, "branchy", verify=False, search_min_arena=False)
    per_op = [row["persistent_bytes"] for row in result["ops"]]
    assert sum(per_op) == result["tail_bytes"] and all(b > 0 for b in per_op)
    kinds = result["persistent_kinds"]
    assert kinds["Persistent buffer data"] > 0 and sum(kinds.values()) <= result["tail_bytes"]
    ops = Model.from_bytes(branchy_int8).main.ops
    for op, row in zip(ops, result["ops"]):
        if op.opcode == "CONV_2D":
            assert row["persistent_bytes"] >= 8 * op.outputs[0].shape[-1], row
    assert "TFLM tail by kind: " in format_table(result)
