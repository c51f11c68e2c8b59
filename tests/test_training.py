"""Float training + QAT (real tfmot) under tf.distribute strategies, and the int8 accuracy it buys."""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import models
from converters.quantize import evaluate_int8, per_channel_fully_connected, read_labels, to_int8_tflite
from tinyvision.data import SHAPE_CLASSES, synthetic_arrays, synthetic_dataset
from tinyvision.errors import TinyVisionError
from tinyvision.training import STRATEGIES, make_strategy, train

L = tf.keras.layers


def small_cnn(resolution, classes=8, softmax=False):
    """Conv2D/DepthwiseConv2D + BN + ReLU6, ~30k parameters."""

    def conv_bn_relu(x, filters, kernel=3):
        x = L.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(6.0)(x)

    x_in = L.Input((resolution, resolution, 3))
    x = L.MaxPooling2D()(conv_bn_relu(x_in, 16))
    x = L.MaxPooling2D()(conv_bn_relu(x, 32))
    x = L.MaxPooling2D()(conv_bn_relu(x, 64))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = conv_bn_relu(x, 64, 1)
    x = L.GlobalAveragePooling2D()(x)
    return tf.keras.Model(x_in, L.Dense(classes, activation="softmax" if softmax else None)(x), name="small_cnn")


def test_qat_int8_accuracy_matches_float():
    """The headline: built-in data, float + QAT training, int8 conversion, int8 accuracy on a held-out split.

    32 px, 8000 training images, 10 float + 2 QAT epochs: about a minute on 2 cores,
    ~90 % accuracy (chance: 12.5 %).
    """
    resolution = 32
    train_ds = synthetic_dataset(8000, resolution, seed=1, shuffle=True, batch_size=32)
    val = synthetic_arrays(400, resolution, seed=1, split="val")
    test_images, test_labels = synthetic_arrays(800, resolution, seed=1, split="test")

    result = train(lambda: small_cnn(resolution), train_ds, val, epochs=10, qat_epochs=2, seed=0, verbose=2)
    assert result.float_accuracy > 0.7 and result.qat_accuracy > 0.7
    assert len(result.float_history["accuracy"]) == 10 and len(result.qat_history["accuracy"]) == 2
    assert any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) for layer in result.model.layers)

    data = to_int8_tflite(result.model, val[0][:200], labels=SHAPE_CLASSES)
    qat_accuracy = result.model.evaluate(test_images, test_labels, verbose=0, return_dict=True)["accuracy"]
    int8_accuracy = evaluate_int8(data, test_images, test_labels)
    print(f"float {result.float_accuracy:.4f} (val)  QAT {qat_accuracy:.4f}  int8 {int8_accuracy:.4f} (test)  "
          f"training {result.seconds:.0f} s")
    assert qat_accuracy > 0.7
    assert abs(int8_accuracy - qat_accuracy) <= 0.015
    assert per_channel_fully_connected(data) == [] and read_labels(data) == list(SHAPE_CLASSES)


def test_mirrored_strategy_one_step():
    """A model built outside the scope is cloned into it; float and QAT phases run one step each."""
    images, labels = synthetic_arrays(32, 16, seed=0)
    built_outside = small_cnn(16)
    # Learning rate 0: the kernels must come through the clone unchanged.
    result = train(built_outside, (images, labels), (images, labels), epochs=1, qat_epochs=1, strategy="mirrored",
                   batch_size=32, learning_rate=0.0, verbose=0)
    assert result.float_model is not built_outside
    assert all(isinstance(v, tf.distribute.DistributedValues) for v in result.model.trainable_variables)
    assert len(result.float_history["loss"]) == 1 and len(result.qat_history["loss"]) == 1
    assert 0.0 <= result.qat_accuracy <= 1.0
    np.testing.assert_array_equal(result.float_model.layers[1].kernel.numpy(), built_outside.layers[1].kernel.numpy())


def test_zoo_model_qat_and_int8():
    """A (shortened) zoo MobileNetV2: composite layers are flattened for tfmot, then converted."""
    images, labels = synthetic_arrays(16, 32, seed=0, classes=("circle", "person"))
    build = lambda: models.mobilenet_v2(  # noqa: E731
        alpha=0.35, resolution=32, classes=2, stages=((1, 16, 1, 1, 3), (6, 24, 1, 2, 3)))
    result = train(build, tf.data.Dataset.from_tensor_slices((images, labels)), epochs=1, batch_size=16,
                   verbose=0)
    assert result.float_accuracy is None and result.qat_accuracy is None  # no validation data
    data = to_int8_tflite(result.model, images, labels=["circle", "person"])
    assert per_channel_fully_connected(data) == []
    assert 0.0 <= evaluate_int8(data, images, labels) <= 1.0


def test_short_runs_settle_batchnorm_statistics():
    """A 6-step run with the zoo's momentum 0.999 would leave the moving variance ~99% at its initial 1
    (the conv outputs' variance is ~0.05); the trainer lowers the momentum so it tracks the real one."""
    images, labels = synthetic_arrays(48, 16, seed=0)
    model = small_cnn(16)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = 0.999
    result = train(model, (images, labels), epochs=2, qat=False, batch_size=16, learning_rate=0.0, verbose=0,
                   seed=0)
    first_bn = next(layer for layer in result.model.layers if isinstance(layer, L.BatchNormalization))
    assert first_bn.momentum == pytest.approx(0.01 ** (1 / 6))
    conv_outputs = tf.keras.Model(result.model.inputs, first_bn.input)(images).numpy()
    variance = conv_outputs.reshape(-1, conv_outputs.shape[-1]).var(axis=0)
    # An EMA of 16-image batch variances plus 1% of the initial 1: within a factor e (untreated: ~e^3).
    assert np.abs(np.log(first_bn.moving_variance.numpy() / variance)).max() < 1.0


def test_softmax_output_is_detected():
    images, labels = synthetic_arrays(16, 16, seed=0)
    result = train(small_cnn(16, softmax=True), (images, labels), epochs=1, qat=False, verbose=0)
    assert result.model is result.float_model and result.qat_history is None
    assert result.model.loss.get_config()["from_logits"] is False
    assert np.isfinite(result.float_history["loss"][0])


def test_strategies_by_name():
    assert STRATEGIES == ("default", "mirrored", "multi-worker")
    assert make_strategy("default") is tf.distribute.get_strategy()
    mirrored = make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and make_strategy(mirrored) is mirrored
    with pytest.raises(TinyVisionError, match="unknown strategy 'tpu'"):
        make_strategy("tpu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(strategy="parameter-server"), "unknown strategy"),
    (dict(epochs=-1), "epochs must be"),
    (dict(epochs=0, qat=False), "nothing to train"),
    (dict(qat_epochs=0), "qat_epochs must be"),
    (dict(train_ds=[1, 2, 3]), "tf.data.Dataset or an"),
    (dict(train_ds=tf.data.Dataset.range(3)), r"\(images, labels\) pairs"),
    (dict(train_ds=(np.zeros((0, 16, 16, 3)), np.zeros((0,)))), "0 images"),
    (dict(train_ds=synthetic_dataset(8, 16).take(0)), "training dataset is empty"),
    (dict(model="mobilenet"), "expected a tf.keras model"),
])
def test_bad_arguments(kwargs, message):
    images, labels = synthetic_arrays(8, 16, seed=0)
    args = dict(model=small_cnn(16), train_ds=(images, labels), epochs=1, verbose=0) | kwargs
    with pytest.raises(TinyVisionError, match=message):
        train(**args)
