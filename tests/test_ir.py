import numpy as np
import pytest

from conftest import reference_outputs
from converters.ir import Model, Op, Tensor
from tinyvision.errors import TinyVisionError


def test_round_trip_is_bit_exact(small_cnn_tflite):
    model = Model.from_bytes(small_cnn_tflite)
    exported = model.to_bytes()
    x = np.random.default_rng(1).integers(-128, 128, (1, 24, 24, 3), dtype=np.int8)
    for a, b in zip(reference_outputs(small_cnn_tflite, x), reference_outputs(exported, x)):
        np.testing.assert_array_equal(a, b)
    again = Model.from_bytes(exported)
    assert [op.opcode for op in again.main.ops] == [op.opcode for op in model.main.ops]
    assert again.metadata.keys() == model.metadata.keys()


def test_graph_structure(small_cnn_tflite):
    g = Model.from_bytes(small_cnn_tflite).main
    assert [op.opcode for op in g.ops][:1] == ["CONV_2D"]
    assert "ADD" in [op.opcode for op in g.ops]
    assert g.inputs[0].dtype == np.int8 and g.inputs[0].shape == (1, 24, 24, 3)
    producers, consumers = g.producers(), g.consumers()
    add = next(op for op in g.ops if op.opcode == "ADD")
    assert all(t in producers for t in add.inputs)
    conv0_out = g.ops[0].outputs[0]
    assert len(consumers[conv0_out]) == 2  # depthwise branch and the residual add
    weights = g.ops[0].inputs[1]
    assert weights.is_constant and weights.quantization.per_channel


def test_constant_buffers_are_aligned_and_shared(small_cnn_tflite):
    from tensorflow.lite.python import schema_py_generated as schema

    model = Model.from_bytes(small_cnn_tflite)
    g = model.main
    first = g.ops[0].inputs[1]
    g.ops[0].inputs[1] = Tensor("twin_weights", first.shape, np.int8, data=first.data.copy(),
                                quantization=first.quantization)
    data = model.to_bytes()
    fb = schema.Model.GetRootAs(data, 0)
    payloads = []
    for i in range(fb.BuffersLength()):
        buffer = fb.Buffers(i)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            assert start % 16 == 0
            payloads.append(buffer.DataAsNumpy().tobytes())
    assert len(payloads) == len(set(payloads))  # the twin shares its buffer


def test_rewritten_op_order_exports(small_cnn_tflite):
    model = Model.from_bytes(small_cnn_tflite)
    g = model.main
    relu = Op("RELU", [g.outputs[0]], [Tensor("extra", g.outputs[0].shape, np.int8,
                                              quantization=g.outputs[0].quantization)])
    g.ops.append(relu)
    g.outputs = relu.outputs
    again = Model.from_bytes(model.to_bytes())
    assert again.main.ops[-1].opcode == "RELU"
    assert again.main.outputs[0].name == "extra"


@pytest.mark.parametrize("data", [b"", b"garbage!", b"\0\0\0\0TFL3" + b"\xff" * 40])
def test_corrupt_input_is_a_clear_error(data):
    with pytest.raises(TinyVisionError):
        Model.from_bytes(data)
