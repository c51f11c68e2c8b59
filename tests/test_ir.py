import os

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


def _edited(model_bytes, change):
    """``model_bytes`` with ``change(ModelT)`` applied through TensorFlow's object API."""
    from tensorflow.lite.tools import flatbuffer_utils

    fb = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    change(fb)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(fb))


def _conv(fb):
    return fb.subgraphs[0].operators[0]  # the small CNN's first op: CONV_2D


def _set_buffer(fb, data):
    fb.buffers[fb.subgraphs[0].tensors[_conv(fb).inputs[1]].buffer].data = data


MALFORMED = [
    (lambda fb: setattr(_conv(fb), "opcodeIndex", 99), r"operator 0 uses operator code 99, but there are \d+"),
    (lambda fb: _conv(fb).inputs.__setitem__(0, 9999), r"operator 0 \(CONV_2D\) input is tensor 9999, but there are"),
    (lambda fb: setattr(fb.signatureDefs[0], "subgraphIndex", 3), r"signature .* names subgraph 3, but there are 1"),
    (lambda fb: setattr(fb.signatureDefs[0].inputs[0], "tensorIndex", 9999),
     r"signature .* maps .* to tensor 9999, but there are"),
    (lambda fb: setattr(_conv(fb).builtinOptions, "strideW", 0), r"operator 0 \(CONV_2D\) has strideW 0"),
    (lambda fb: setattr(_conv(fb), "builtinOptions", None), r"operator 0 \(CONV_2D\) needs Conv2DOptions, has none"),
    (lambda fb: _set_buffer(fb, np.zeros(10, np.uint8)), r"needs 216 B of data, its buffer \d+ holds 10 B"),
    (lambda fb: setattr(fb.subgraphs[0].tensors[_conv(fb).inputs[1]], "buffer", 9999),
     r"points at buffer 9999, but there are"),
    (lambda fb: setattr(fb.subgraphs[0].tensors[fb.subgraphs[0].inputs[0]], "shape",
                        np.asarray([1, 40000, 40000, 8], np.int32)),
     r"of shape \[1, 40000, 40000, 8\] takes 12,800,000,000 B, more than the"),
    (lambda fb: setattr(fb.subgraphs[0], "outputs", np.zeros(0, np.int32)), r"the graph has no outputs"),
    (lambda fb: _conv(fb).inputs.__setitem__(0, _conv(fb).outputs[0]),
     r"operator 0 \(CONV_2D\) reads tensor .*, which no earlier operator writes \(it writes it itself\)"),
    (lambda fb: _conv(fb).inputs.__setitem__(0, fb.subgraphs[0].operators[1].outputs[0]),
     r"operator 0 \(CONV_2D\) reads tensor .*, which no earlier operator writes: the graph has a cycle"),
]


@pytest.mark.parametrize("change, message", MALFORMED)
def test_malformed_models_are_refused_with_a_named_cause(small_cnn_tflite, change, message):
    with pytest.raises(TinyVisionError, match=message):
        Model.from_bytes(_edited(small_cnn_tflite, change), "m.tflite")


def test_real_world_models_pass_the_import_checks():
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "models")
    if not os.path.isdir(folder):
        pytest.skip("../shared/models is not here")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".tflite"):
            with open(os.path.join(folder, name), "rb") as f:
                Model.from_bytes(f.read(), name)
