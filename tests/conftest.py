"""Shared test fixtures: small real int8 models built with the real TFLite converter."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tinyvision  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long training or whole-zoo runs (deselect with -m 'not slow')")


def int8_tflite(keras_model, samples=8, seed=0, per_channel_dense=False):
    """Full-int8 conversion of a float Keras model, calibrated on uniform(-1, 1) inputs.

    per_channel_dense: TF's default per-channel FULLY_CONNECTED weights (else per-tensor).
    """
    from converters.quantize import int8_converter

    shape = keras_model.input_shape[1:]
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(samples):
            yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

    return int8_converter(keras_model, representative, per_channel_dense).convert()


def two_output_cnn(head_channels, hidden=16, samples=8):
    """An int8 CNN with two outputs, as a detector has one per scale: a stride-2 convolution on a 32x32x3 image,
    then a 1x1 head on its 16x16 map and another after a second stride-2 convolution (8x8). The converter
    orders the outputs."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    image = tf.keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(image)
    fine = layers.Conv2D(head_channels, 1)(x)
    coarse = layers.Conv2D(head_channels, 1)(layers.Conv2D(hidden, 3, strides=2, padding="same",
                                                           activation="relu6")(x))
    return int8_tflite(tf.keras.Model(image, [fine, coarse]), samples=samples)


def reference_outputs(model_bytes, x):
    """Outputs of ``model_bytes`` on tf.lite.Interpreter (default kernels) for the input array ``x``."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=model_bytes)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def randomize(model, seed=0):
    """Random weights, BN statistics included (variances positive), so activations keep their size."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


@pytest.fixture(scope="session")
def mobilenet_v2(pytestconfig):
    """keras MobileNetV2(alpha=0.35, 144x144x3, 1000 classes, no softmax, random weights), full int8:
    {"per_tensor": bytes, "per_channel": bytes} (dense weights), converted once into pytest's cache folder.

    The conversion takes ~25 s; the cache key holds the TensorFlow version.
    """
    import tensorflow as tf

    from tinyvision.fileio import atomic_write_bytes

    folder = pytestconfig.cache.mkdir(f"tinyvision-mobilenetv2-035-144-tf{tf.__version__}")
    paths = {kind: os.path.join(folder, f"{kind}.tflite") for kind in ("per_tensor", "per_channel")}
    if not all(os.path.exists(p) for p in paths.values()):
        tf.keras.utils.set_random_seed(0)
        keras_model = tf.keras.applications.MobileNetV2(
            alpha=0.35, input_shape=(144, 144, 3), weights=None, classes=1000, classifier_activation=None
        )
        for kind, path in paths.items():
            atomic_write_bytes(path, int8_tflite(keras_model, samples=3, per_channel_dense=kind == "per_channel"))
    models = {}
    for kind, path in paths.items():
        with open(path, "rb") as f:
            models[kind] = f.read()
    return models


@pytest.fixture(scope="session")
def small_cnn_tflite():
    """A small int8 CNN with a residual branch: conv s2 -> dw -> conv -> add -> pool -> dense."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    x_in = tf.keras.Input((24, 24, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x_in)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    y = L.Conv2D(8, 1)(y)
    x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5)(x)
    return int8_tflite(tf.keras.Model(x_in, out))
