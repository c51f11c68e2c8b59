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
    import tensorflow as tf

    shape = keras_model.input_shape[1:]
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(samples):
            yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    return converter.convert()


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
