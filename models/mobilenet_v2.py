"""MobileNetV2 (as keras.applications builds it) and its receptive-field-redistributed variant."""
import tinyvision  # noqa: F401
import tensorflow as tf

from tinyvision.errors import TinyVisionError
from tinyvision.layers import InvertedResidual

layers = tf.keras.layers

# (expansion t, output channels c at alpha 1, repeats n, first stride s, depthwise kernel k)
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 32, 3, 2, 3),
    (6, 64, 4, 2, 3),
    (6, 96, 3, 1, 3),
    (6, 160, 3, 2, 3),
    (6, 320, 1, 1, 3),
)

# Receptive-field redistribution (MCUNetV2, Lin et al. 2021). With patch-based
# inference the per-patch stage is everything at stride <= 8 (stem + block_0..block_5
# in MobileNetV2); its receptive field sets the halo by which each patch must overlap
# its neighbours. Changes, in keras.applications block numbering of the original:
#   - stride-4 stage (c=24): 2 -> 1 block (block_2 removed);
#   - stride-8 stage (c=32): 3 -> 2 blocks (block_5 removed);
#   - stride-16 stages (c=64, c=96): depthwise 3x3 -> 5x5, c=96 gets 4 blocks (+1);
#   - stride-32 stages (c=160, c=320): depthwise 3x3 -> 7x7, c=160 gets 4 blocks (+1).
# Same 17 blocks in total. Receptive field of the per-patch stage (each 3x3 depthwise
# adds 2 x current stride): stem 3, block_0 7, block_1 11, [block_2 19], block_3 27 -> 19,
# block_4 43 -> 35, [block_5 59]: 59 px -> 35 px (``models.receptive_field(m, 8)``),
# while the image-level stages see more context through the larger kernels.
MOBILENET_V2_RD_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 1, 2, 3),
    (6, 32, 2, 2, 3),
    (6, 64, 4, 2, 5),
    (6, 96, 4, 1, 5),
    (6, 160, 4, 2, 7),
    (6, 320, 1, 1, 7),
)


def make_divisible(value, divisor=8):
    """keras.applications' channel rounding: nearest multiple of ``divisor``, >= 90 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _mobilenet(stages, alpha, resolution, classes, include_top, pooling, classifier_activation,
               keras_padding, channels, name):
    if not alpha > 0:
        raise TinyVisionError(f"alpha must be > 0, got {alpha!r}")
    if not (isinstance(resolution, int) and resolution >= 32):
        raise TinyVisionError(f"resolution must be an int >= 32, got {resolution!r}")
    inputs = layers.Input((resolution, resolution, channels))
    x = mobilenet_v2_features(inputs, alpha, stages, keras_padding)
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = layers.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="global_max_pooling2d")(x)
    elif pooling is not None:
        raise TinyVisionError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    return tf.keras.Model(inputs, x, name=name or f"mobilenetv2_{alpha:0.2f}_{resolution}")


def mobilenet_v2_features(inputs, alpha, stages=MOBILENET_V2_STAGES, keras_padding=False, max_stride=None):
    """The stem and inverted-residual blocks of MobileNetV2 applied to ``inputs`` (no 1280-channel conv, no top).

    Layers are named as keras.applications names them. ``max_stride`` stops before the first
    block that would take the output stride beyond it (8: everything up to block_5, the
    backbone of FOMO-style detectors); None keeps every block of ``stages``.
    """
    x = layers.Conv2D(make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False,
                      name="Conv1")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    block, total_stride = 0, 2
    for expansion, filters, repeats, stride, kernel in stages:
        if max_stride is not None and total_stride * stride > max_stride:
            break
        total_stride *= stride
        for i in range(repeats):
            x = InvertedResidual(make_divisible(int(filters * alpha)), expansion,
                                 stride if i == 0 else 1, kernel, keras_padding=keras_padding,
                                 name="expanded_conv" if block == 0 else f"block_{block}")(x)
            block += 1
    return x


def mobilenet_v2(alpha=1.0, resolution=224, classes=1000, include_top=True, pooling=None,
                 classifier_activation=None, keras_padding=True, channels=3, stages=None,
                 name=None):
    """MobileNetV2 with the topology of tf.keras.applications.MobileNetV2 (weights=None).

    Input ``(B, resolution, resolution, channels)``; output logits ``(B, classes)``
    (``classifier_activation=None``), or features ``(B, h, w, 1280)`` / pooled
    ``(B, 1280)`` without the top. Same layer names, and (after ``flatten``) the same
    layers, layer count and parameter count as keras.applications. Blocks are
    ``InvertedResidual``; ``keras_padding=False`` drops the four explicit ZeroPadding2D
    layers of the stride-2 blocks for 'same' padding (same outputs, no PAD ops in TFLite).
    ``stages`` overrides the (t, c, n, s, k) block table (``MOBILENET_V2_STAGES``).
    """
    return _mobilenet(stages or MOBILENET_V2_STAGES, alpha, resolution, classes, include_top,
                      pooling, classifier_activation, keras_padding, channels, name)


def mobilenet_v2_rd(alpha=1.0, resolution=224, classes=1000, include_top=True, pooling=None,
                    classifier_activation=None, keras_padding=False, channels=3, stages=None,
                    name=None):
    """Receptive-field-redistributed MobileNetV2 (MCUNetV2 style); see MOBILENET_V2_RD_STAGES.

    Same stem, head, strides and block count as ``mobilenet_v2``; one block fewer at
    stride 4 and at stride 8 (smaller per-patch receptive field, so smaller patch
    halos), one more at stride 16 and at stride 32, with 5x5 / 7x7 depthwise kernels
    there. Input ``(B, resolution, resolution, channels)``, output ``(B, classes)``.
    """
    return _mobilenet(stages or MOBILENET_V2_RD_STAGES, alpha, resolution, classes, include_top,
                      pooling, classifier_activation, keras_padding, channels,
                      name or f"mobilenetv2_rd_{alpha:0.2f}_{resolution}")
