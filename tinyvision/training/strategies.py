"""tf.distribute strategies by name.

``"default"``      the strategy in scope (tf.distribute.get_strategy(): one device unless
                   the caller entered another strategy's scope).
``"mirrored"``     MirroredStrategy: synchronous data parallelism over the local GPUs
                   (the CPU when there are none).
``"multi-worker"`` MultiWorkerMirroredStrategy: synchronous data parallelism across the
                   workers named in the TF_CONFIG environment variable (a single local
                   worker without it). With several workers, create it at program start,
                   before any other TensorFlow work, as TensorFlow requires.
"""
import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.errors import TinyVisionError

STRATEGIES = ("default", "mirrored", "multi-worker")

# TensorFlow allows one collective-ops configuration per process, so a
# MultiWorkerMirroredStrategy is created once and reused.
_multi_worker = None


def make_strategy(strategy="default"):
    """A strategy name (or a tf.distribute.Strategy, returned as is) -> tf.distribute.Strategy."""
    global _multi_worker
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi-worker":
        if _multi_worker is None:
            _multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
        return _multi_worker
    raise TinyVisionError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
