"""Full-int8 conversion, FULLY_CONNECTED quantization granularity and TFLite metadata (real converter)."""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from converters.ir import Model
from converters.quantize import (attach_metadata, evaluate_int8, per_channel_fully_connected, read_labels,
                                 read_metadata, representative_samples, to_int8_tflite)
from tinyvision.data import SHAPE_CLASSES, synthetic_arrays, synthetic_dataset
from tinyvision.errors import TinyVisionError

L = tf.keras.layers
RESOLUTION = 24


def _small_cnn(classes=8, name="small_cnn"):
    tf.keras.utils.set_random_seed(0)
    x_in = L.Input((RESOLUTION, RESOLUTION, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x_in)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    return tf.keras.Model(x_in, L.Dense(classes)(x), name=name)


@pytest.fixture(scope="module")
def model():
    return _small_cnn()


@pytest.fixture(scope="module")
def calibration():
    return synthetic_arrays(32, RESOLUTION, seed=0)


@pytest.fixture(scope="module")
def converted(model, calibration):
    """An untrained float model, post-training quantized on the built-in data."""
    return to_int8_tflite(model, calibration, labels=SHAPE_CLASSES, description="test model")


def _weights(data, opcode):
    graph = Model.from_bytes(data).main
    return [op.inputs[1] for op in graph.ops if op.opcode == opcode]


def test_full_int8_with_per_tensor_dense(converted):
    graph = Model.from_bytes(converted).main
    assert [np.dtype(t.dtype) for t in graph.inputs + graph.outputs] == [np.int8, np.int8]
    assert {op.opcode for op in graph.ops} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    (conv,), (dw,), (fc,) = (_weights(converted, op) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    assert conv.quantization.scale.size == 8 and dw.quantization.scale.size == 8  # per-channel convolutions
    assert fc.quantization.scale.size == 1  # per-tensor FULLY_CONNECTED: what CMSIS-NN reads
    assert per_channel_fully_connected(converted) == []
    # The input quantization is the normalization: q = pixel - 128, i.e. scale 1/127.5, zero point -1.
    q = graph.inputs[0].quantization
    np.testing.assert_allclose(q.scale, [1 / 127.5], rtol=1e-5)
    assert q.zero_point.tolist() == [-1]


def test_per_channel_dense_is_detected(model, calibration):
    data = to_int8_tflite(model, calibration[0][:8], per_channel_dense=True)
    (fc,) = _weights(data, "FULLY_CONNECTED")
    assert fc.quantization.scale.size == 8
    (found,) = per_channel_fully_connected(data)
    assert (found.subgraph, found.output_channels, found.scales) == (0, 8, 8)
    assert found.weights == fc.name
    assert "FULLY_CONNECTED" in str(found) and "per-channel" in str(found)


def test_metadata_round_trip(converted):
    meta = read_metadata(converted)
    assert meta == {"name": "small_cnn", "description": "test model", "normalization": (127.5, 127.5),
                    "labels": list(SHAPE_CLASSES), "box_coding": None}  # a classifier: no box coding
    assert read_labels(converted) == list(SHAPE_CLASSES)


def test_metadata_keeps_the_model_runnable_and_aligned(model, calibration, converted):
    """Same outputs with and without metadata; weight buffers stay 16-byte aligned for TFLM."""
    bare = to_int8_tflite(model, calibration, labels=None, normalization=None)
    assert read_labels(bare) == [] and read_metadata(bare)["normalization"] is None
    images = calibration[0][:4]
    outputs = []
    for data in (bare, converted):
        interpreter = tf.lite.Interpreter(model_content=data)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero_point = inp["quantization"]
        interpreter.set_tensor(inp["index"], np.round(images[:1] / scale + zero_point).astype(np.int8))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]))
    np.testing.assert_array_equal(*outputs)
    fb = schema.Model.GetRootAsModel(converted, 0)
    base = np.frombuffer(converted, np.uint8).ctypes.data
    for i in range(fb.BuffersLength()):
        if fb.Buffers(i).DataLength():
            assert (fb.Buffers(i).DataAsNumpy().ctypes.data - base) % 16 == 0


def test_reattaching_metadata_replaces_it(converted):
    names = [f"class_{i}" for i in range(8)]
    data = attach_metadata(converted, "renamed", labels=names, normalization=(0.0, 255.0))
    meta = read_metadata(data)
    assert (meta["name"], meta["labels"], meta["normalization"]) == ("renamed", names, (0.0, 255.0))
    assert len(data) < len(converted) + 200  # the old labels archive is not carried along
    with pytest.raises(TinyVisionError, match="3 labels given for a model with 8 outputs"):
        attach_metadata(converted, "x", labels=["a", "b", "c"])


def test_no_metadata(model, calibration):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_model = converter.convert()
    assert read_metadata(float_model) is None and read_labels(float_model) == []
    with pytest.raises(TinyVisionError, match="int8 input"):
        evaluate_int8(float_model, *calibration)
    with pytest.raises(TinyVisionError, match="TFL3"):
        read_labels(b"not a model at all")


def test_representative_data_forms(calibration):
    images, labels = calibration
    shape = images.shape[1:]
    batched = synthetic_dataset(32, RESOLUTION, seed=0, batch_size=10)
    for data in (images, (images, labels), batched, batched.unbatch(), batched.map(lambda x, y: x),
                 lambda: ([image[None]] for image in images)):
        samples = representative_samples(data, shape, max_samples=25)
        np.testing.assert_array_equal(samples, images[:25])


@pytest.mark.parametrize("data, message", [
    (np.full((4, RESOLUTION, RESOLUTION, 3), 200.0, np.float32), "normalize the images first"),
    (np.zeros((4, 16, 16, 3), np.float32), r"shape \(16, 16, 3\) per image"),
    (np.zeros((0, RESOLUTION, RESOLUTION, 3), np.float32), "empty"),
    (np.full((4, RESOLUTION, RESOLUTION, 3), np.nan, np.float32), "NaN"),
    (42, "not an array, dataset or iterable"),
])
def test_bad_representative_data(model, data, message):
    with pytest.raises(TinyVisionError, match=message):
        to_int8_tflite(model, data)


def test_bad_models(calibration):
    images = calibration[0][:4]
    with pytest.raises(TinyVisionError, match="3 labels given for a model with 8 outputs"):
        to_int8_tflite(_small_cnn(), images, labels=["a", "b", "c"])
    x_in = L.Input((RESOLUTION, RESOLUTION, 3))
    two_heads = tf.keras.Model(x_in, [L.Dense(2)(L.Flatten()(x_in)), L.Dense(3)(L.Flatten()(x_in))])
    with pytest.raises(TinyVisionError, match="expected one"):
        to_int8_tflite(two_heads, images)
    with pytest.raises(TinyVisionError, match="expected a tf.keras"):
        to_int8_tflite(object(), images)


@pytest.mark.parametrize("op, message", [
    # No TFLite builtin at all: the converter fails with pages of MLIR diagnostics.
    (lambda t: tf.linalg.det(t[..., :3, :3])[..., None, None] * t,
     "int8 conversion of 'needs_float' failed: 'tf.MatrixDeterminant' op is neither a custom op nor a flex op"),
    # Builtins without int8 kernels: the converter quietly keeps them in float32, the check refuses.
    (lambda t: tf.math.cumsum(tf.math.cos(t), axis=1), "needs_float is not fully int8"),
])
def test_float_ops_and_conversion_failures_are_one_line(calibration, op, message):
    x_in = L.Input((RESOLUTION, RESOLUTION, 3))
    x = L.Lambda(op)(x_in)
    model = tf.keras.Model(x_in, L.Dense(4)(L.GlobalAveragePooling2D()(x)), name="needs_float")
    with pytest.raises(TinyVisionError, match=message) as error:
        to_int8_tflite(model, calibration[0][:4])
    assert "\n" not in str(error.value)
