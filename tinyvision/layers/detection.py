"""CentroidHead: per-cell class logits (background included) for FOMO-style centroid detection."""
from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import PointwiseHead, layers, register


@register
class CentroidHead(PointwiseHead):
    """Class logits for every cell of a fully convolutional backbone's output grid.

    Input ``(B, gh, gw, C)`` (the backbone's features, one cell per ``stride x stride``
    pixels of the image); output ``(B, gh, gw, classes + 1)`` logits, channel 0 being
    "background" and channel ``k`` object class ``k - 1``: a cell scores class ``k``
    when the centre of an object of that class lies in it (FOMO, Edge Impulse 2022).
    A softmax over the last axis gives the per-cell heatmaps that
    ``tinyvision.detection.decode_centroids`` turns into detections.

    ``hidden > 0`` puts a 1x1 convolution of ``hidden`` channels (BN, ReLU6) before the
    1x1 logits convolution; ``hidden == 0`` is the logits convolution alone. Both are
    pointwise, so the head keeps the network fully convolutional (any grid size, and
    patch-wise execution computes the same cells as the whole image).

    Args:
      classes: number of object classes (background not counted), >= 1.
      hidden: channels of the hidden 1x1 convolution, 0 for none.
    """

    def __init__(self, classes, hidden=32, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(classes, int) and classes >= 1):
            raise TinyVisionError(f"classes must be an int >= 1, got {classes!r}")
        if not (isinstance(hidden, int) and hidden >= 0):
            raise TinyVisionError(f"hidden must be an int >= 0, got {hidden!r}")
        self.classes = classes
        self.hidden = hidden

    def build(self, input_shape):
        self.build_hidden(input_shape)
        self.logits = layers.Conv2D(self.classes + 1, 1, padding="same", name=f"{self.name}_logits")
        super().build(input_shape)

    def call(self, inputs):
        return self.logits(self.hidden_features(inputs))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.classes + 1)

    def get_config(self):
        config = super().get_config()
        config.update(classes=self.classes, hidden=self.hidden)
        return config
