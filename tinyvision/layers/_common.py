"""Pieces shared by the tinyvision layers.

Every composite layer here builds only builtin Keras sublayers and its ``call`` does
nothing but call them, so the TFLite converter sees plain CONV_2D / DEPTHWISE_CONV_2D /
ADD / STRIDED_SLICE / MEAN / CONCATENATION ops and ``flatten`` can replay ``call`` on
symbolic tensors to expose the sublayers to tfmot.
"""
import contextlib

import tinyvision  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf

from tinyvision.errors import TinyVisionError

layers = tf.keras.layers
register = tf.keras.saving.register_keras_serializable(package="tinyvision")

# keras.applications.MobileNetV2 values, so blocks reproduce it exactly.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999


class Composite(layers.Layer):
    """Base of the tinyvision layers made only of builtin sublayers (see ``flatten``).

    Inside ``inline_composites()``, calling a built composite runs its ``call`` directly,
    so on symbolic inputs only its builtin sublayers become graph nodes.
    """

    _inline = False

    def __call__(self, *args, **kwargs):
        if Composite._inline and self.built:
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)


@contextlib.contextmanager
def inline_composites():
    """Within this block, built Composite layers expand into their sublayer calls."""
    previous, Composite._inline = Composite._inline, True
    try:
        yield
    finally:
        Composite._inline = previous


def pair(value, what):
    """``n`` or ``(a, b)`` -> ``(a, b)`` of positive ints; TinyVisionError otherwise."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise TinyVisionError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return value


def batch_norm(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def relu6(name):
    # ReLU(6) lowers to RELU6, which the converter fuses into the conv before it.
    return layers.ReLU(6.0, name=name)


def pointwise(filters, name):
    return layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name)


def depthwise(kernel_size, stride, name, padding="same"):
    return layers.DepthwiseConv2D(kernel_size, strides=stride, padding=padding,
                                  use_bias=False, name=name)


def check_block_args(filters, expansion, stride, kernel_size):
    if not (isinstance(filters, int) and filters > 0):
        raise TinyVisionError(f"filters must be a positive int, got {filters!r}")
    if not (isinstance(expansion, int) and expansion > 0):
        raise TinyVisionError(f"expansion must be a positive int, got {expansion!r}")
    if stride not in (1, 2):
        raise TinyVisionError(f"stride must be 1 or 2, got {stride!r}")
    if not (isinstance(kernel_size, int) and kernel_size % 2 == 1):
        raise TinyVisionError(f"kernel_size must be an odd int, got {kernel_size!r}")
