"""Partial execution of CONV_2D -> global pool, and of an expansion -> strided depthwise: bit-exact on TFLite
and TFLM, lower live memory."""
import numpy as np
import pytest

from converters.ir import Graph, Model, Op, Quantization, Tensor
from converters.passes import (
    choose_parts,
    live_bytes_per_op,
    peak_live_bytes,
    split_pooled_convolutions,
    split_pooled_convolutions_tflite,
    split_strided_expansions,
)
from converters.passes.channel_split import MAX_CONCAT_INPUTS
from converters.planning.metadata import METADATA_NAME
from tinyvision.errors import TinyVisionError
from tinyvision.runtime import tflm

CHANNELS = 200


def calibration(shape, samples=4, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (samples, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def pooled_conv_tflite():
    """8x8x16 -> CONV_2D 1x1, 200 filters (per-channel), ReLU6 -> MEAN (1, 2) -> FULLY_CONNECTED 10,
    converted by the project's converter: x = 1,024 B, y = 12,800 B, z = 200 B."""
    import tensorflow as tf

    from converters.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    x_in = tf.keras.Input((8, 8, 16))
    y = L.Conv2D(CHANNELS, 1, activation="relu6")(x_in)
    out = L.Dense(10)(L.GlobalAveragePooling2D()(y))
    return to_int8_tflite(tf.keras.Model(x_in, out), calibration((8, 8, 16)), normalization=None)


def per_tensor_int8(keras_model):
    """Full-int8 conversion with per-TENSOR convolution weights (the project's converter is per-channel)."""
    import tensorflow as tf

    data = calibration(keras_model.input_shape[1:])
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([d[None]] for d in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True
    return converter.convert()


def tflite_outputs(model_bytes, x, reference_kernels=False):
    import tensorflow as tf

    kind = tf.lite.experimental.OpResolverType
    it = tf.lite.Interpreter(
        model_content=model_bytes,
        experimental_op_resolver_type=kind.BUILTIN_REF if reference_kernels else kind.AUTO,
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def random_inputs(model_bytes, count, seed=0):
    shape = Model.from_bytes(model_bytes).main.inputs[0].shape
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(count)]


def assert_same_on_tflite(original, rewritten, inputs):
    for x in inputs:
        for reference_kernels in (False, True):
            expected = tflite_outputs(original, x, reference_kernels)
            for a, b in zip(expected, tflite_outputs(rewritten, x, reference_kernels)):
                np.testing.assert_array_equal(a, b)


def assert_same_on_tflm(original, rewritten, x):
    expected = tflm.run(original, [x])
    for a, b in zip(expected, tflm.run(rewritten, [x])):
        np.testing.assert_array_equal(a, b)


def opcodes(graph):
    return [op.opcode for op in graph.ops]


def concatenation_depth(graph, tensor):
    """Levels of CONCATENATION above the pools that produce ``tensor``."""
    producer = graph.producers()[tensor]
    if producer.opcode != "CONCATENATION":
        return 0
    return 1 + max(concatenation_depth(graph, t) for t in producer.inputs)


# ---------------------------------------------------------------- real models


def test_default_split_is_bit_exact_and_hierarchical(pooled_conv_tflite):
    before = Model.from_bytes(pooled_conv_tflite).main
    z = before.ops[1].outputs[0]
    assert opcodes(before) == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]

    data, (result,) = split_pooled_convolutions_tflite(pooled_conv_tflite)
    after = Model.from_bytes(data).main
    # Slices of at most max(1,024, 200) B = 16 channels of 64 B: 200 / 16 -> 13 parts.
    assert (result.pool, result.channels, result.parts) == ("MEAN", CHANNELS, 13)
    assert opcodes(after).count("CONV_2D") == opcodes(after).count("MEAN") == 13
    # 13 > 10 inputs: two concatenations of 6 and 7 parts, then one of the two.
    concats = [op for op in after.ops if op.opcode == "CONCATENATION"]
    assert sorted(len(op.inputs) for op in concats) == [2, 6, 7]
    assert concats[-1].outputs[0].name == z.name and concatenation_depth(after, concats[-1].outputs[0]) == 2
    for op in concats:
        assert op.options.axis == 1 and all(t.quantization.scale == z.quantization.scale for t in op.inputs)
    # Depth-first: each part's MEAN right after its CONV_2D, and each group concatenated when complete.
    assert opcodes(after)[:14] == ["CONV_2D", "MEAN"] * 6 + ["CONCATENATION", "CONV_2D"]
    # The region was the graph's peak (x + y); one slice of y at a time takes it down.
    assert result.peak_before == peak_live_bytes(before) == 1024 + 12_800
    assert result.peak_after == peak_live_bytes(after) < 1024 + 1024 + 2 * 208
    inputs = random_inputs(pooled_conv_tflite, 3)
    assert_same_on_tflite(pooled_conv_tflite, data, inputs)
    assert_same_on_tflm(pooled_conv_tflite, data, inputs[0])


def test_board_exact_mean_is_a_channelwise_pool_too(pooled_conv_tflite):
    """``convert`` writes a rescaling global MEAN as a DEPTHWISE_CONV_2D with a 1x1 output for the board
    (``converters.passes.board_mean``). It treats every channel on its own as well: its weights and bias are
    split with the filters, bit-exact."""
    from converters.passes.board_mean import board_exact_means_tflite

    board = board_exact_means_tflite(pooled_conv_tflite)[0]
    assert "DEPTHWISE_CONV_2D" in opcodes(Model.from_bytes(board).main)
    data, (result,) = split_pooled_convolutions_tflite(board, parts=4)
    assert (result.pool, result.parts) == ("DEPTHWISE_CONV_2D", 4)
    pools = [op for op in Model.from_bytes(data).main.ops if op.opcode == "DEPTHWISE_CONV_2D"]
    assert [op.inputs[1].shape for op in pools] == [(1, 8, 8, 50)] * 4
    inputs = random_inputs(board, 3)
    assert_same_on_tflite(board, data, inputs)
    assert_same_on_tflm(board, data, inputs[0])


def test_forced_parts(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    (result,) = split_pooled_convolutions(model, parts=4)
    graph = model.main
    assert result.parts == 4 and opcodes(graph) == ["CONV_2D", "MEAN"] * 4 + ["CONCATENATION", "FULLY_CONNECTED"]
    convs = [op for op in graph.ops if op.opcode == "CONV_2D"]
    assert [op.inputs[1].shape[0] for op in convs] == [50] * 4
    assert [op.outputs[0].name for op in convs] == [f"{result.conv_output}/part{i}" for i in range(4)]
    original_filter = Model.from_bytes(pooled_conv_tflite).main.ops[0].inputs[1]
    for i, op in enumerate(convs):
        # Per-channel filters: the slice keeps its own rows, scales and zero points.
        filters, bias = op.inputs[1], op.inputs[2]
        np.testing.assert_array_equal(filters.data, original_filter.data[50 * i : 50 * (i + 1)])
        scales = original_filter.quantization.scale[50 * i : 50 * (i + 1)]
        np.testing.assert_array_equal(filters.quantization.scale, scales)
        assert filters.quantization.scale.size == bias.quantization.scale.size == bias.shape[0] == 50
        assert op.options.fusedActivationFunction == 3  # RELU6 kept on every part
    data = model.to_bytes()
    assert_same_on_tflite(pooled_conv_tflite, data, random_inputs(pooled_conv_tflite, 2, seed=1))


def test_one_part_per_channel_nests_concatenations_and_runs_on_tflm(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    (result,) = split_pooled_convolutions(model, parts=10_000)  # capped at the channel count
    graph = model.main
    assert result.parts == CHANNELS and opcodes(graph).count("CONV_2D") == CHANNELS
    concats = [op for op in graph.ops if op.opcode == "CONCATENATION"]
    assert max(len(op.inputs) for op in concats) <= MAX_CONCAT_INPUTS
    # 200 parts: 2 groups of 100, each 10 groups of 10.
    assert len(concats) == 1 + 2 + 20 and concatenation_depth(graph, concats[-1].outputs[0]) == 3
    data = model.to_bytes()
    x = random_inputs(pooled_conv_tflite, 1, seed=2)[0]
    assert_same_on_tflite(pooled_conv_tflite, data, [x])
    assert_same_on_tflm(pooled_conv_tflite, data, x)


def test_per_tensor_filters_and_average_pool():
    """A 3x3 per-tensor convolution into AVERAGE_POOL_2D over the whole 6x6 extent (4-D output)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    L = tf.keras.layers
    x_in = tf.keras.Input((6, 6, 8))
    y = L.Conv2D(90, 3, padding="same", activation="relu")(x_in)
    out = L.Dense(4)(L.Flatten()(L.AveragePooling2D(6)(y)))
    original = per_tensor_int8(tf.keras.Model(x_in, out))
    conv = Model.from_bytes(original).main.ops[0]
    assert conv.opcode == "CONV_2D" and not conv.inputs[1].quantization.per_channel

    data, (result,) = split_pooled_convolutions_tflite(original)
    # x = 288 B, y = 3,240 B (36 B per channel), z = 90 B: slices of 8 channels -> 12 parts.
    assert (result.pool, result.parts) == ("AVERAGE_POOL_2D", 12)
    graph = Model.from_bytes(data).main
    assert opcodes(graph).count("AVERAGE_POOL_2D") == 12
    for op in graph.ops:
        if op.opcode == "CONV_2D":
            assert op.inputs[1].quantization.scale.size == op.inputs[2].quantization.scale.size == 1
            assert op.options.fusedActivationFunction == 1  # RELU
        if op.opcode == "CONCATENATION":
            assert op.options.axis == 3
    assert result.peak_after < result.peak_before and peak_live_bytes(graph) < peak_live_bytes(
        Model.from_bytes(original).main)
    inputs = random_inputs(original, 3)
    assert_same_on_tflite(original, data, inputs)
    assert_same_on_tflm(original, data, inputs[0])


def test_output_with_two_consumers_is_not_split():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(2)
    L = tf.keras.layers
    x_in = tf.keras.Input((8, 8, 4))
    y = L.Conv2D(64, 1)(x_in)
    out = L.Dense(3)(L.Concatenate()([L.GlobalAveragePooling2D()(y), L.GlobalMaxPooling2D()(y)]))
    original = per_tensor_int8(tf.keras.Model(x_in, out))
    graph = Model.from_bytes(original).main
    y = graph.ops[0].outputs[0]
    assert sorted(op.opcode for op in graph.consumers()[y]) == ["MEAN", "REDUCE_MAX"]
    data, results = split_pooled_convolutions_tflite(original)
    assert data is original and results == []


def test_graph_output_is_not_split(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    model.main.outputs.append(model.main.ops[0].outputs[0])
    assert split_pooled_convolutions(model) == []
    assert opcodes(model.main) == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_graph_without_the_pattern_is_unchanged(small_cnn_tflite):
    # conv -> ADD -> MEAN: the pool reads the residual sum, not a convolution.
    data, results = split_pooled_convolutions_tflite(small_cnn_tflite)
    assert data is small_cnn_tflite and results == []


def test_max_parts_one_leaves_the_pair_whole(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    (result,) = split_pooled_convolutions(model, max_parts=1)
    assert (result.parts, result.peak_after) == (1, result.peak_before)
    assert opcodes(model.main) == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]


def tiny_pair():
    """x (1,4,4,1) --CONV_2D 1x1, 2 filters--> y (1,4,4,2) --MEAN (1, 2)--> z (1,2): 16, 32 and 2 B."""
    def q(n=1):
        return Quantization(np.full(n, 0.1, np.float32), np.zeros(n, np.int64))

    x = Tensor("x", (1, 4, 4, 1), np.int8, quantization=q())
    w = Tensor("w", (2, 1, 1, 1), np.int8, data=np.ones((2, 1, 1, 1), np.int8), quantization=q(2))
    b = Tensor("b", (2,), np.int32, data=np.zeros(2, np.int32), quantization=q(2))
    y = Tensor("y", (1, 4, 4, 2), np.int8, quantization=q())
    axes = Tensor("axes", (2,), np.int32, data=np.array([1, 2], np.int32))
    z = Tensor("z", (1, 2), np.int8, quantization=q())
    ops = [Op("CONV_2D", [x, w, b], [y]), Op("MEAN", [y, axes], [z])]
    return Graph(ops, [x], [z], [x, w, b, y, axes, z])


def test_split_that_would_not_lower_memory_is_left_whole():
    # k = 2 slices of 16 B, but x, a slice, the pooled parts and z each take a 16-byte block:
    # 48 B before (x + y) and 48 B after.
    graph = tiny_pair()
    (result,) = split_pooled_convolutions(graph)
    assert (result.parts, result.peak_before, result.peak_after) == (1, 48, 48)
    assert opcodes(graph) == ["CONV_2D", "MEAN"]
    # Forced, the split is made all the same.
    (result,) = split_pooled_convolutions(graph, parts=2)
    assert (result.parts, result.peak_after) == (2, 48)
    assert opcodes(graph) == ["CONV_2D", "MEAN", "CONV_2D", "MEAN", "CONCATENATION"]


def test_stale_offline_plan_is_dropped(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    model.metadata[METADATA_NAME] = b"\x01\x00\x00\x00" * 3
    split_pooled_convolutions(model, max_parts=1)
    assert METADATA_NAME in model.metadata  # unchanged model, plan kept
    split_pooled_convolutions(model, parts=2)
    assert METADATA_NAME not in model.metadata


# ---------------------------------------------------------------- expansion -> strided depthwise


@pytest.fixture(scope="module")
def bottlenecks_tflite():
    """Two inverted bottlenecks on 16x16x8: a stride-2 one (expand to 48 channels, depthwise 3x3 stride 2,
    project to 16) and a stride-1 one (expand to 96, depthwise 3x3, project to 16, residual ADD)."""
    import tensorflow as tf

    from converters.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(3)
    L = tf.keras.layers
    x_in = tf.keras.Input((16, 16, 8))
    y = L.Conv2D(48, 1, activation="relu6")(x_in)
    y = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(y)
    y = L.Conv2D(16, 1)(y)
    z = L.Conv2D(96, 1, activation="relu6")(y)
    z = L.DepthwiseConv2D(3, padding="same", activation="relu6")(z)
    out = L.Add()([y, L.Conv2D(16, 1)(z)])
    return to_int8_tflite(tf.keras.Model(x_in, out), calibration((16, 16, 8)), normalization=None)


def test_strided_expansion_runs_group_by_group_and_stride_one_stays_whole(bottlenecks_tflite):
    model = Model.from_bytes(bottlenecks_tflite)
    before = peak_live_bytes(model.main)
    assert opcodes(model.main).count("DEPTHWISE_CONV_2D") == 2
    (result,) = split_strided_expansions(model)  # the stride-1 pair is not even a candidate
    graph = model.main
    # x 16x16x8 = 2,048 B, y 16x16x48 = 12,288 B, z 8x8x48 = 3,072 B: slices of <= 3,072 B (12 channels).
    assert (result.pool, result.channels, result.parts) == ("DEPTHWISE_CONV_2D", 48, 4)
    assert result.peak_before == before == 12_288 + 3_072  # y and z at the depthwise (x is dead)
    # The region drops to half; the graph's peak moves to the stride-1 block (8x8x96 twice and 8x8x16).
    assert result.peak_after <= before // 2 and peak_live_bytes(graph) == 2 * 6_144 + 1_024 < before
    depthwise = [op for op in graph.ops if op.opcode == "DEPTHWISE_CONV_2D"]
    assert [op.inputs[1].shape for op in depthwise] == [(1, 3, 3, 12)] * 4 + [(1, 3, 3, 96)]
    assert all(op.options.strideH == 2 for op in depthwise[:4])
    assert opcodes(graph)[:9] == ["CONV_2D", "DEPTHWISE_CONV_2D"] * 4 + ["CONCATENATION"]
    data = model.to_bytes()
    inputs = random_inputs(bottlenecks_tflite, 3)
    assert_same_on_tflite(bottlenecks_tflite, data, inputs)
    assert_same_on_tflm(bottlenecks_tflite, data, inputs[0])


def test_strided_expansion_that_feeds_another_op_is_not_split(bottlenecks_tflite):
    model = Model.from_bytes(bottlenecks_tflite)
    model.main.outputs.append(model.main.ops[0].outputs[0])  # the expansion is read outside the pair
    assert split_strided_expansions(model) == []
    with pytest.raises(TinyVisionError):
        split_strided_expansions(model, max_parts=0)


# ---------------------------------------------------------------- choice of k


def test_choose_parts():
    # keras MobileNetV2(0.35) tail: x 5x5x112, y 5x5x1280, z 1280 -> slices of <= 112 channels.
    assert choose_parts(2_800, 32_000, 1_280, 1_280) == 12
    assert choose_parts(2_800, 32_000, 1_280, 1_280, max_parts=8) == 8
    assert choose_parts(1_000, 1_000, 10, 10) == 1  # y is no larger than x already
    assert choose_parts(10, 6_400, 10, 64, max_parts=100) == 64  # under one channel's bytes: a channel per part


def test_invalid_arguments(pooled_conv_tflite):
    model = Model.from_bytes(pooled_conv_tflite)
    for kwargs in ({"parts": 0}, {"max_parts": 0}, {"parts": 2.5}):
        with pytest.raises(TinyVisionError):
            split_pooled_convolutions(model, **kwargs)


@pytest.mark.slow  # uses the session's MobileNetV2 (converted once, ~25 s, then cached)
def test_mobilenet_v2_tail(mobilenet_v2):
    original = mobilenet_v2["per_tensor"]
    data, (result,) = split_pooled_convolutions_tflite(original)
    before, after = Model.from_bytes(original).main, Model.from_bytes(data).main
    assert (result.channels, result.parts) == (1280, 12)
    # The tail (last 1x1 convolution, MEAN, dense) held x + y = 2,800 + 32,000 B; now x + one slice + z.
    assert result.peak_before == max(live_bytes_per_op(before)[-3:]) == 34_800
    assert result.peak_after == max(live_bytes_per_op(after)[61:]) < 7_000
    assert peak_live_bytes(after) == peak_live_bytes(before)  # the network's peak is at its first blocks
    assert_same_on_tflite(original, data, random_inputs(original, 2))
