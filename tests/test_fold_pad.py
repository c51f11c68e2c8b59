"""Explicit zero-point PADs before stride-1 convolutions (PyTorch exports) fold into SAME padding."""
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from conftest import int8_tflite, randomize
from converters.ir import Model, Op, Tensor
from converters.patching import geometry as geo


def _pad_explicitly(model, index, pads):
    """Run op ``index`` (a SAME convolution) VALID on an explicit PAD of its input, the way PyTorch exports it
    (TF's converter folds stride-1 pads itself)."""
    graph = model.main
    conv = graph.ops[index]
    x = conv.inputs[0]
    (top, bottom), (left, right) = pads
    padded = Tensor(f"{x.name}/pad", (1, x.shape[1] + top + bottom, x.shape[2] + left + right, x.shape[3]),
                    x.dtype, quantization=x.quantization)
    amounts = np.asarray([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
    pad = Op("PAD", [x, Tensor(f"{x.name}/paddings", (4, 2), np.dtype(np.int32), data=amounts)], [padded],
             schema.PadOptionsT(), version=2)
    conv.inputs[0] = padded
    conv.options.padding = geo.VALID
    graph.ops.insert(index, pad)


def test_stride1_pads_fold_and_the_model_stays_bit_exact_on_tflm():
    import tensorflow as tf

    from converters.optimize import optimize_tflite
    from tinyvision.runtime import tflm

    tf.keras.utils.set_random_seed(2)
    L = tf.keras.layers
    x_in = tf.keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x_in)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.Conv2D(4, 3, padding="same", strides=2)(x)
    data = int8_tflite(randomize(tf.keras.Model(x_in, L.GlobalAveragePooling2D()(x))))
    model = Model.from_bytes(data)
    _pad_explicitly(model, 3, ((1, 1), (1, 1)))  # stride 2, PyTorch's pads (SAME pads 0 before, 1 after): kept
    _pad_explicitly(model, 2, ((2, 2), (2, 2)))  # more than SAME: kept (a VALID 3x3 over it is 14x14)
    _pad_explicitly(model, 1, ((1, 1), (1, 1)))  # depthwise, SAME's pads: folded
    _pad_explicitly(model, 0, ((1, 1), (1, 1)))  # convolution, SAME's pads: folded
    model.main.ops[5].outputs[0].shape = (1, 14, 14, 8)  # (the conv after the wide PAD grows, and so on)
    model.main.ops[7].inputs[0].shape = (1, 16, 16, 8)
    model.main.ops[7].outputs[0].shape = (1, 7, 7, 4)
    data = model.to_bytes()
    optimized, report = optimize_tflite(data, "pads.tflite")  # checked bit-exact on TFLM inside
    assert report.folded_pads == 2
    assert [op.opcode for op in Model.from_bytes(optimized).main.ops].count("PAD") == 2
    x = np.random.default_rng(0).integers(-128, 128, (1, 12, 12, 3), dtype=np.int8)
    np.testing.assert_array_equal(tflm.run(optimized, [x])[0], tflm.run(data, [x])[0])
