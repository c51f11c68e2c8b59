"""FOMO-style centroid detector: a MobileNetV2 backbone cut at stride 8 and a CentroidHead."""
import tinyvision  # noqa: F401
import tensorflow as tf

from models.mobilenet_v2 import MOBILENET_V2_STAGES, mobilenet_v2_features
from tinyvision.errors import TinyVisionError
from tinyvision.layers import CentroidHead

# Output stride of the backbone: one heatmap cell per 8 x 8 pixels (20 x 20 cells at 160 px).
DETECTION_STRIDE = 8


def centroid_detector(alpha=0.35, resolution=160, classes=3, hidden=32, keras_padding=False, channels=3,
                      name=None):
    """MobileNetV2 (stem + blocks up to stride 8) + CentroidHead + softmax; fully convolutional, no pooling.

    Input ``(B, resolution, resolution, channels)``; output per-cell class probabilities
    ``(B, resolution / 8, resolution / 8, classes + 1)``, channel 0 the background (see
    ``CentroidHead``). The softmax makes the int8 output a probability in steps of 1/256,
    which the device decoder thresholds directly. At alpha 0.35 the backbone ends in
    block_5 with 16 channels.
    ``keras_padding=False`` uses 'same' padding in the stride-2 blocks (no PAD ops).
    """
    if not (isinstance(resolution, int) and resolution >= 32 and resolution % DETECTION_STRIDE == 0):
        raise TinyVisionError(f"resolution must be a multiple of {DETECTION_STRIDE} >= 32, got {resolution!r}")
    if not alpha > 0:
        raise TinyVisionError(f"alpha must be > 0, got {alpha!r}")
    inputs = tf.keras.layers.Input((resolution, resolution, channels))
    features = mobilenet_v2_features(inputs, alpha, MOBILENET_V2_STAGES, keras_padding, max_stride=DETECTION_STRIDE)
    logits = CentroidHead(classes, hidden, name="centroid_head")(features)
    outputs = tf.keras.layers.Softmax(name="centroid_scores")(logits)
    return tf.keras.Model(inputs, outputs, name=name or f"fomo_mobilenetv2_{alpha:0.2f}_{resolution}")
