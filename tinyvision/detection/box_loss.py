"""The box head's training loss: objectness BCE (empty slots down-weighted), class BCE and an L1 box term.

Targets come from ``BoxCoding.targets`` and share the head's layout ``[B, gh, gw, A * (5 + C)]`` (per
anchor: box offsets, objectness, one-hot class), so Keras feeds them like any label tensor. The box
term compares the four sigmoid-space offsets, where decoding is monotonic in each, so a smaller L1
means a closer box.
"""
import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.errors import TinyVisionError
from tinyvision.layers.box_head import BOX_FIELDS

register = tf.keras.saving.register_keras_serializable(package="tinyvision")


@register
class BoxLoss(tf.keras.losses.Loss):
    """y_true, y_pred float [B, gh, gw, A * (5 + classes)] (targets; the head's sigmoid outputs) -> [B].

    Per image: objectness BCE averaged over the slots with weight 1 for object slots and
    ``empty_weight`` for the others (a few slots in hundreds hold an object); plus, averaged over
    the object slots (none: 0), the class BCE summed over classes and ``box_weight`` times the L1
    distance of the four box offsets.
    """

    def __init__(self, classes, empty_weight=0.05, box_weight=5.0, name="box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not (isinstance(classes, int) and classes >= 1):
            raise TinyVisionError(f"classes must be an int >= 1, got {classes!r}")
        if not 0 < empty_weight <= 1:
            raise TinyVisionError(f"empty_weight must be in (0, 1], got {empty_weight!r}")
        self.classes = classes
        self.empty_weight = float(empty_weight)
        self.box_weight = float(box_weight)

    def call(self, y_true, y_pred):
        fields = BOX_FIELDS + self.classes
        shape = tf.concat([tf.shape(y_pred)[:3], [-1, fields]], 0)
        y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), shape)
        y_pred = tf.reshape(y_pred, shape)
        target_obj = y_true[..., 4]
        weights = tf.where(target_obj > 0, 1.0, self.empty_weight)
        obj = tf.keras.backend.binary_crossentropy(target_obj, y_pred[..., 4])
        obj = tf.reduce_sum(obj * weights, axis=[1, 2, 3]) / tf.reduce_sum(weights, axis=[1, 2, 3])
        cls = tf.reduce_sum(tf.keras.backend.binary_crossentropy(y_true[..., BOX_FIELDS:], y_pred[..., BOX_FIELDS:]),
                            axis=-1)
        box = tf.reduce_sum(tf.abs(y_true[..., :4] - y_pred[..., :4]), axis=-1)
        objects = tf.reduce_sum(target_obj, axis=[1, 2, 3])
        per_object = tf.reduce_sum((cls + self.box_weight * box) * target_obj, axis=[1, 2, 3])
        return obj + per_object / tf.maximum(objects, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(classes=self.classes, empty_weight=self.empty_weight, box_weight=self.box_weight)
        return config
