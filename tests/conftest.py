"""Shared test fixtures: small real int8 models built with the real TFLite converter."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tinyvision  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long training or whole-zoo runs (deselect with -m 'not slow')")


def int8_tflite(keras_model, samples=8, seed=0):
    """Full-int8 conversion of a float Keras model, calibrated on uniform(-1, 1) inputs."""
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
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter.convert()


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
