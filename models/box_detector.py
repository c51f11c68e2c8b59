"""YOLO-style box detector: a MobileNetV2 backbone cut at stride 8 or 16 and an anchor-based BoxHead."""
import tinyvision  # noqa: F401
import tensorflow as tf

from models.mobilenet_v2 import MOBILENET_V2_STAGES, mobilenet_v2_features
from tinyvision.errors import TinyVisionError
from tinyvision.layers import BoxHead


def box_detector(alpha=0.35, resolution=224, classes=3, anchors=None, anchor_count=3, stride=16, hidden=32,
                 keras_padding=False, channels=3, name=None):
    """MobileNetV2 (stem + blocks up to ``stride``) + BoxHead; fully convolutional, no pooling.

    Input ``(B, resolution, resolution, channels)``; output ``(B, resolution / stride, resolution /
    stride, A * (5 + classes))`` sigmoid scores (layout: ``tinyvision.detection.box_coding``), one
    output tensor, so the int8 model runs as a patch bundle like any single-output CNN. ``anchors``
    ``[[w, h], ...]`` in pixels; None: ``anchor_count`` k-means anchors of the built-in detection
    scenes at this resolution. At alpha 0.35, stride 16 ends in block_12 with 32 channels, stride 8
    in block_5 with 16.
    """
    if stride not in (8, 16):
        raise TinyVisionError(f"stride must be 8 or 16, got {stride!r}")
    if not (isinstance(resolution, int) and resolution >= 4 * stride and resolution % stride == 0):
        raise TinyVisionError(f"resolution must be a multiple of {stride} >= {4 * stride}, got {resolution!r}")
    if not alpha > 0:
        raise TinyVisionError(f"alpha must be > 0, got {alpha!r}")
    if anchors is None:
        from tinyvision.detection.anchors import procedural_anchors

        anchors = procedural_anchors(anchor_count, resolution)
    inputs = tf.keras.layers.Input((resolution, resolution, channels))
    features = mobilenet_v2_features(inputs, alpha, MOBILENET_V2_STAGES, keras_padding, max_stride=stride)
    outputs = BoxHead(anchors, classes, stride, hidden, name="box_head")(features)
    return tf.keras.Model(inputs, outputs, name=name or f"yolo_mobilenetv2_{alpha:0.2f}_{resolution}")
