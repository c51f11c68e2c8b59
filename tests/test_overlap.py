"""Shifted in-place buffers (converters/planning/overlap.py): depthwise and PAD outputs over their input.

Each model is planned with the overlap, run on real TFLM with the plan and checked bit-exact
against tf.lite's reference kernels; the same plan with the input one pixel (the margin
``required_shift`` keeps for kernels that write a pixel before reading it) and 16 bytes closer
to the output must corrupt the result on TFLM's kernel, so the shift is not slack.
"""
import numpy as np
import pytest

from conftest import int8_tflite
from converters.ir import Model
from converters.planning import align_up, compare_on_tflm, encode_offline_offsets, plan_graph, write_offline_plan
from converters.planning.metadata import METADATA_NAME
from converters.planning.overlap import required_shift


def _keras():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    return tf, tf.keras.layers


def _depthwise_model(size, channels, kernel, stride, padding, multiplier=1):
    tf, L = _keras()
    x_in = tf.keras.Input((size, size, 3))
    x = L.Conv2D(channels, 1, activation="relu")(x_in)  # the input the depthwise output overlaps
    x = L.DepthwiseConv2D(kernel, strides=stride, padding=padding, depth_multiplier=multiplier)(x)
    x = L.Conv2D(4, 1)(x)
    return int8_tflite(tf.keras.Model(x_in, x))


def _pad_model(pads):
    tf, L = _keras()
    x_in = tf.keras.Input((9, 11, 3))
    x = L.Conv2D(8, 1, activation="relu")(x_in)
    x = L.ZeroPadding2D(pads)(x)
    x = L.Conv2D(4, 3)(x)  # VALID, so the padded values matter
    return int8_tflite(tf.keras.Model(x_in, x))


def _overlapped(data, opcode):
    model = Model.from_bytes(data)
    plan = plan_graph(model.main)
    pairs = [p for p in plan.in_place if model.main.ops[p.op_index].opcode == opcode]
    return model, plan, pairs


def _run(planned_bytes, original_bytes, graph, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-128, 128, t.shape, dtype=np.int8) for t in graph.inputs]
    return compare_on_tflm(planned_bytes, original_bytes, inputs)


@pytest.mark.parametrize("kernel,stride,padding,multiplier", [
    (3, 1, "same", 1), (3, 2, "same", 1), (5, 1, "valid", 1), (3, 1, "same", 2), (7, 2, "same", 1),
])
def test_depthwise_writes_over_its_input_bit_exact(kernel, stride, padding, multiplier):
    data = _depthwise_model(15, 16, kernel, stride, padding, multiplier)
    model, plan, pairs = _overlapped(data, "DEPTHWISE_CONV_2D")
    assert len(pairs) == 1
    pair = pairs[0]
    assert plan.offsets[pair.input] - plan.offsets[pair.output] == pair.shift
    x, y = pair.input, pair.output
    assert plan.offsets[y] < plan.offsets[x] + x.nbytes  # they do overlap
    write_offline_plan(model, plan)
    result = _run(model.to_bytes(), data, model.main)
    assert result.bit_exact and result.planned_head == plan.size


def test_depthwise_shift_is_tight():
    """One pixel and 16 bytes lower than required, TFLM's kernel overwrites input it still has to read."""
    data = _depthwise_model(15, 16, 3, 1, "same")
    model, plan, (pair,) = _overlapped(data, "DEPTHWISE_CONV_2D")
    assert pair.shift == align_up((15 + 2) * 16)  # one row and two pixels of channels ahead
    offsets = plan.offline_offsets()
    index = model.main.used_tensors().index(pair.input)
    offsets[index] -= 16 + 16  # one 16-channel pixel, then 16 bytes
    model.metadata[METADATA_NAME] = encode_offline_offsets(offsets)  # bypasses check_plan on purpose
    result = _run(model.to_bytes(), data, model.main)
    assert not result.bit_exact


@pytest.mark.parametrize("pads", [((0, 2), (0, 0)), ((1, 1), (2, 0)), ((0, 0), (1, 3)), ((2, 0), (0, 1))])
def test_pad_writes_over_its_input_bit_exact(pads):
    data = _pad_model(pads)
    model, plan, pairs = _overlapped(data, "PAD")
    assert len(pairs) == 1
    assert pairs[0].shift == align_up(required_shift(model.main.ops[pairs[0].op_index]))
    write_offline_plan(model, plan)
    result = _run(model.to_bytes(), data, model.main, seed=3)
    assert result.bit_exact and result.planned_head == plan.size


def test_pad_shift_counts_the_pads_before_the_last_input_byte():
    data = _pad_model(((1, 2), (3, 1)))
    model = Model.from_bytes(data)
    pad = next(op for op in model.main.ops if op.opcode == "PAD")
    # output 12 x 15 x 8; the last input byte sits at row 1 + 8, column 3 + 10, channel 7
    last = ((1 + 8) * 15 + (3 + 10)) * 8 + 7
    assert required_shift(pad) == last + 1 - 9 * 11 * 8


def test_overlap_lowers_the_head_and_can_be_disabled():
    data = _depthwise_model(24, 32, 3, 1, "same")
    graph = Model.from_bytes(data).main
    with_overlap, without = plan_graph(graph), plan_graph(graph, overlap=False)
    assert not [p for p in without.in_place if p.shift]
    assert with_overlap.size < without.size
