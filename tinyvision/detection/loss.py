"""Per-cell cross-entropy for centroid heatmaps, background cells down-weighted (FOMO's training loss).

About 3 cells in 400 hold an object centre: unweighted, predicting "background" everywhere is
almost optimal. Background cells weigh ``background_weight``, object cells 1; each image's loss is
its weighted mean over cells, so the loss stays on the same scale for any weight.
"""
import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.errors import TinyVisionError

register = tf.keras.saving.register_keras_serializable(package="tinyvision")


@register
class CentroidLoss(tf.keras.losses.Loss):
    """y_true int [B, gh, gw] (0 background, k >= 1 class k - 1); y_pred [B, gh, gw, classes + 1]
    probabilities (``from_logits=False``, a model ending in softmax) or logits."""

    def __init__(self, background_weight=0.05, from_logits=False, name="centroid_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 < background_weight <= 1:
            raise TinyVisionError(f"background_weight must be in (0, 1], got {background_weight!r}")
        self.background_weight = float(background_weight)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_true = tf.cast(tf.reshape(y_true, tf.shape(y_pred)[:-1]), tf.int32)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)
        weights = tf.where(y_true > 0, 1.0, self.background_weight)
        return tf.reduce_sum(ce * weights, axis=[1, 2]) / tf.reduce_sum(weights, axis=[1, 2])

    def get_config(self):
        config = super().get_config()
        config.update(background_weight=self.background_weight, from_logits=self.from_logits)
        return config


def centroid_loss(background_weight=0.05, from_logits=False):
    """A CentroidLoss (see the class)."""
    return CentroidLoss(background_weight, from_logits)
