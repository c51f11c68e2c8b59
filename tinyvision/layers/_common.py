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


QAT_HINT = ("a tinyvision composite layer: tfmot cannot wrap it; quantize the model with "
            "tinyvision.training.quantize(model), which flattens it into builtin Keras layers for tfmot")


class _CompositeClass(type):
    """The composites' metaclass: their class repr carries QAT_HINT.

    tfmot's ``quantize_model`` names the class of a layer it cannot quantize in its error
    ("Layer seg:<class ...> is not supported"): that is where a user calling tfmot directly
    on a tinyvision model looks, so the repr points at ``tinyvision.training.quantize``.
    """

    def __repr__(cls):
        return f"<class '{cls.__module__}.{cls.__qualname__}' ({QAT_HINT})>"


class Composite(layers.Layer, metaclass=_CompositeClass):
    """Base of the tinyvision layers made only of builtin sublayers (see ``flatten``).

    Inside ``inline_composites()``, calling a built composite runs its ``call`` directly,
    so on symbolic inputs only its builtin sublayers become graph nodes.
    """

    _inline = False

    def __call__(self, *args, **kwargs):
        _check_keras_2(args, self.name)
        if Composite._inline and self.built:
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class PointwiseHead(Composite):
    """Base of the detection heads: on a feature map (B, gh, gw, C), an optional hidden 1x1
    convolution of ``self.hidden`` channels (BN, ReLU6) before the head's own output layers.

    Subclasses set ``self.hidden`` and call ``build_hidden`` in ``build`` and ``hidden_features``
    in ``call``; everything stays pointwise, so patch-wise execution computes the same cells.
    """

    def build_hidden(self, input_shape):
        if len(input_shape) != 4:
            raise TinyVisionError(f"{self.name} takes a feature map (B, gh, gw, C), got {tuple(input_shape)}")
        if self.hidden:
            self.conv = pointwise(self.hidden, f"{self.name}_conv")
            self.conv_bn = batch_norm(f"{self.name}_conv_BN")
            self.conv_relu = relu6(f"{self.name}_conv_relu")

    def hidden_features(self, inputs):
        return self.conv_relu(self.conv_bn(self.conv(inputs))) if self.hidden else inputs


def _check_keras_2(args, name):
    """TinyVisionError for Keras 3 tensors: the layers are tf_keras (Keras 2) layers, which tfmot needs."""
    for value in tf.nest.flatten(args):
        if type(value).__module__.split(".")[0] == "keras":
            raise TinyVisionError(
                f"layer {name!r} got a Keras 3 tensor ({type(value).__name__}): tinyvision layers are Keras 2 "
                "(tf_keras) layers, which tfmot needs. Build the model with tf.keras after `import tinyvision` "
                "(it sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads) or with `import tf_keras as keras`, "
                "not `import keras`")


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
