"""BoxHead: per-cell, per-anchor objectness, class scores and box offsets (YOLO-style), all through a sigmoid."""
import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import PointwiseHead, layers, register

# Per anchor, the output channels are: x, y, w, h (box offsets), objectness, then one score per class.
BOX_FIELDS = 5


@register
class BoxHead(PointwiseHead):
    """Anchor-based box predictions for every cell of a fully convolutional backbone's output grid.

    Input ``(B, gh, gw, C)`` (the backbone's features, one cell per ``stride x stride`` pixels);
    output ``(B, gh, gw, A * (5 + classes))`` in (0, 1), one sigmoid per channel; anchor ``a`` owns
    channels ``a * (5 + classes) .. (a + 1) * (5 + classes) - 1``: x, y, w, h, objectness, class scores.
    Boxes decode as in YOLOv5 (``tinyvision.detection.box_coding``): centre
    ``(cell + 2 * s_xy - 0.5) * stride`` and size ``anchor * (2 * s_wh) ** 2`` pixels. Sigmoid outputs
    keep the int8 output at TFLite's fixed LOGISTIC quantization (steps of 1/256 over [0, 1)), which
    suits every field; an exp-scaled size would need a wide, coarse int8 range.

    ``hidden > 0`` puts a 1x1 convolution of ``hidden`` channels (BN, ReLU6) before the output
    convolution. Both are pointwise, so patch-wise execution computes the same cells as the whole image.

    Args:
      anchors: ``[[w, h], ...]`` anchor sizes in input pixels (e.g. from ``kmeans_anchors``).
      classes: number of object classes, >= 1.
      stride: input pixels per grid cell (the backbone's output stride).
      hidden: channels of the hidden 1x1 convolution, 0 for none.
    """

    def __init__(self, anchors, classes, stride, hidden=32, **kwargs):
        super().__init__(**kwargs)
        anchors = np.asarray(anchors, np.float64)
        if anchors.ndim != 2 or anchors.shape[1] != 2 or len(anchors) < 1 or not np.all(anchors > 0):
            raise TinyVisionError(f"anchors must be [[w, h], ...] of positive sizes, got {anchors.tolist()!r}")
        if not (isinstance(classes, int) and classes >= 1):
            raise TinyVisionError(f"classes must be an int >= 1, got {classes!r}")
        if not (isinstance(stride, int) and stride >= 1):
            raise TinyVisionError(f"stride must be an int >= 1, got {stride!r}")
        if not (isinstance(hidden, int) and hidden >= 0):
            raise TinyVisionError(f"hidden must be an int >= 0, got {hidden!r}")
        self.anchors = [[float(w), float(h)] for w, h in anchors]
        self.classes = classes
        self.stride = stride
        self.hidden = hidden

    @property
    def channels(self):
        """Output channels: A * (5 + classes)."""
        return len(self.anchors) * (BOX_FIELDS + self.classes)

    def build(self, input_shape):
        self.build_hidden(input_shape)
        self.predict = layers.Conv2D(self.channels, 1, padding="same", name=f"{self.name}_predict")
        self.sigmoid = layers.Activation("sigmoid", name=f"{self.name}_sigmoid")
        super().build(input_shape)

    def call(self, inputs):
        return self.sigmoid(self.predict(self.hidden_features(inputs)))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, classes=self.classes, stride=self.stride, hidden=self.hidden)
        return config
