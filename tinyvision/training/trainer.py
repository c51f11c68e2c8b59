"""Float training followed by quantization-aware fine-tuning, under a tf.distribute strategy.

The usual recipe for int8 deployment: train the float model to convergence, wrap it
with tfmot's ``quantize_model`` (fake-quantization of weights and activations, BatchNorm
folded into the convolutions) and fine-tune briefly at a lower learning rate, so the
weights adapt to int8 rounding before :func:`converters.quantize.to_int8_tflite`.
"""
import dataclasses
import time
from typing import Optional

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tinyvision.errors import TinyVisionError
from tinyvision.layers import flatten
from tinyvision.training.strategies import make_strategy

# BatchNormalization layers keep moving statistics with momentum 0.999 (keras.applications'
# value, made for ImageNet-length runs). After a few hundred steps those still mostly hold
# their initial mean 0 / variance 1, and the trained model predicts a single class at
# inference. Float training lowers the momentum so that the initial values weigh at most
# this much in the statistics by the end of the run.
BN_INITIAL_WEIGHT = 0.01


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    model: the trained QAT model (tfmot-wrapped; float fake-quant), or the float model
        when ``qat=False`` -- what to pass to ``to_int8_tflite``.
    float_model: the model after float training.
    float_history / qat_history: Keras ``History.history`` dicts (per-epoch metrics).
    float_accuracy / qat_accuracy: accuracy on ``val_ds`` after each phase (None
        without validation data or when the phase did not run).
    seconds: wall time of the whole run.
    """

    model: tf.keras.Model
    float_model: tf.keras.Model
    float_history: dict
    qat_history: Optional[dict]
    float_accuracy: Optional[float]
    qat_accuracy: Optional[float]
    seconds: float

    @property
    def metrics(self):
        return {"float_accuracy": self.float_accuracy, "qat_accuracy": self.qat_accuracy, "seconds": self.seconds}


def train(model, train_ds, val_ds=None, epochs=5, qat=True, qat_epochs=None, strategy="default",
          learning_rate=2e-3, qat_learning_rate=None, batch_size=32, from_logits=None, seed=None, verbose=1,
          callbacks=None, loss=None):
    """Train ``model`` on ``train_ds`` (float, then QAT) and return a :class:`TrainResult`.

    model: a tf.keras functional/Sequential model, or a zero-argument function that
        builds one. Variables must be created under the strategy's scope: a function is
        called there; a model built elsewhere is cloned there with its weights.
    train_ds / val_ds: tf.data.Dataset of (images [B, H, W, C], int labels [B]) --
        unbatched datasets are batched with ``batch_size`` -- or an (images, labels)
        tuple of arrays (shuffled each epoch, batched with ``batch_size``).
    epochs: float training epochs (0 skips float training, e.g. for a pretrained model).
    qat: fine-tune with quantization-aware training for ``qat_epochs`` (default
        ``max(1, epochs // 2)``) at ``qat_learning_rate`` (default learning_rate / 10).
    strategy: "default", "mirrored", "multi-worker" or a tf.distribute.Strategy.
    from_logits: whether the model outputs logits; None detects a final softmax.
    loss: a Keras loss taking (labels, outputs); None: sparse cross-entropy for classifiers
        ([B, classes] outputs, labels [B]), ``tinyvision.detection.centroid_loss`` for
        per-cell heatmaps ([B, gh, gw, classes + 1] outputs, labels [B, gh, gw]) and
        ``tinyvision.detection.BoxLoss`` for a model with a BoxHead (targets shaped like its
        output, from ``BoxCoding.targets``).
    verbose: Keras verbosity (1 progress bar, 2 one line per epoch, 0 silent); phase
        headers and accuracies are printed when > 0.
    """
    start = time.time()
    if not isinstance(epochs, int) or epochs < 0:
        raise TinyVisionError(f"epochs must be an integer >= 0, got {epochs!r}")
    qat_epochs = max(1, epochs // 2) if qat_epochs is None else qat_epochs
    if qat and (not isinstance(qat_epochs, int) or qat_epochs < 1):
        raise TinyVisionError(f"qat_epochs must be an integer >= 1, got {qat_epochs!r}")
    if not qat and epochs == 0:
        raise TinyVisionError("nothing to train: epochs=0 and qat=False")
    strategy = make_strategy(strategy)
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    train_ds = _as_dataset(train_ds, batch_size, True, seed, multi_worker, "training")
    val_ds = None if val_ds is None else _as_dataset(val_ds, batch_size, False, seed, multi_worker, "validation")
    steps = _steps_per_epoch(train_ds)

    with strategy.scope():
        float_model = _build_in_scope(model, strategy)
        from_logits = _outputs_logits(float_model) if from_logits is None else from_logits
        loss = _default_loss(float_model, from_logits) if loss is None else loss
        metrics = [] if _box_heads(float_model) else ["accuracy"]  # a box output has no class per sample
        _compile(float_model, learning_rate, epochs * steps if steps else None, loss, metrics)
    float_history, float_accuracy = {}, None
    if epochs:
        _fit_batchnorm_momentum(float_model, epochs * steps if steps else None, verbose)
        _say(verbose, f"float training: {epochs} epoch(s) on {strategy.num_replicas_in_sync} replica(s)")
        float_history = float_model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose,
                                        callbacks=callbacks).history
        float_accuracy = _accuracy(float_model, val_ds, verbose, "float")
    if not qat:
        return TrainResult(float_model, float_model, float_history, None, float_accuracy, None, time.time() - start)

    with strategy.scope():
        qat_model = quantize(float_model)
        qat_lr = learning_rate / 10 if qat_learning_rate is None else qat_learning_rate
        _compile(qat_model, qat_lr, qat_epochs * steps if steps else None, loss, metrics)
    _say(verbose, f"QAT fine-tuning: {qat_epochs} epoch(s)")
    qat_history = qat_model.fit(train_ds, validation_data=val_ds, epochs=qat_epochs, verbose=verbose,
                                callbacks=callbacks).history
    qat_accuracy = _accuracy(qat_model, val_ds, verbose, "QAT")
    return TrainResult(qat_model, float_model, float_history, qat_history, float_accuracy, qat_accuracy,
                       time.time() - start)


def quantize(model):
    """The tfmot QAT version of ``model``.

    The zoo's composite layers are first flattened into builtin Keras layers
    (``tinyvision.layers.flatten``), since tfmot only quantizes layers it knows. Call
    under the strategy scope the model will be trained in.
    """
    flat = flatten(model)
    try:
        return tfmot.quantization.keras.quantize_model(flat)
    except (ValueError, RuntimeError, TypeError, KeyError) as e:
        raise TinyVisionError(f"QAT cannot wrap model {model.name!r}: {_first_line(e)}") from None


# --- helpers -------------------------------------------------------------------------------

def _say(verbose, message):
    if verbose:
        print(f"[tinyvision] {message}", flush=True)


def _build_in_scope(model, strategy):
    """A Keras model whose variables belong to ``strategy`` (call inside its scope)."""
    if not isinstance(model, tf.keras.Model):
        if not callable(model):
            raise TinyVisionError(f"expected a tf.keras model or a function building one, got {type(model).__name__}")
        model = model()
        if not isinstance(model, tf.keras.Model):
            raise TinyVisionError(f"the model function returned {type(model).__name__}, not a tf.keras model")
        return model
    if not model.built:
        raise TinyVisionError(f"model {model.name!r} is not built; give it an input shape")
    if all(strategy.extended.variable_created_in_scope(v) for v in model.variables):
        return model
    if not getattr(model, "_is_graph_network", False):  # subclassed models cannot be cloned
        raise TinyVisionError(f"model {model.name!r} was built outside the {type(strategy).__name__} scope; "
                              "pass a function that builds it instead")
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _fit_batchnorm_momentum(model, steps, verbose):
    """Cap every BatchNormalization momentum at BN_INITIAL_WEIGHT ** (1 / steps) (steps None: unknown, keep)."""
    if not steps:
        return
    cap = BN_INITIAL_WEIGHT ** (1.0 / steps)
    lowered = [layer for layer in model.submodules
               if isinstance(layer, tf.keras.layers.BatchNormalization) and layer.momentum > cap]
    for layer in lowered:
        layer.momentum = cap
    if lowered:
        _say(verbose, f"BatchNorm momentum {cap:.4f} in {len(lowered)} layer(s), so the moving statistics "
                      f"settle within {steps} steps")


def _outputs_logits(model):
    """False when the model ends in a softmax (probabilities), True otherwise."""
    last = model.layers[-1]
    if isinstance(last, tf.keras.layers.Softmax):
        return False
    return getattr(last, "activation", None) not in (tf.keras.activations.softmax, tf.nn.softmax)


def _box_heads(model):
    from tinyvision.layers import BoxHead

    return [layer for layer in model.layers if isinstance(layer, BoxHead)]


def _default_loss(model, from_logits):
    heads = _box_heads(model)
    if heads:
        from tinyvision.detection import BoxLoss

        return BoxLoss(heads[0].classes)
    if len(model.outputs) == 1 and model.outputs[0].shape.rank == 4:
        from tinyvision.detection import centroid_loss

        return centroid_loss(from_logits=from_logits)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def _compile(model, learning_rate, decay_steps, loss, metrics):
    schedule = (tf.keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.05)
                if decay_steps else learning_rate)
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)


def _as_dataset(data, batch_size, shuffle, seed, multi_worker, what):
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        if len(images) == 0 or len(images) != len(labels):
            raise TinyVisionError(f"{what} data has {len(images)} images and {len(labels)} labels")
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    elif isinstance(data, tf.data.Dataset):
        ds = data
        spec = ds.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise TinyVisionError(f"{what} dataset must yield (images, labels) pairs, got {spec}")
        if spec[0].shape.rank == 3:
            ds = ds.batch(batch_size)
    else:
        raise TinyVisionError(f"{what} data must be a tf.data.Dataset or an (images, labels) tuple, "
                              f"got {type(data).__name__}")
    if ds.cardinality() == 0:
        raise TinyVisionError(f"{what} dataset is empty")
    if multi_worker:
        # In-memory and generated data has no files to shard by: shard by element instead.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


def _steps_per_epoch(ds):
    steps = int(ds.cardinality())
    return steps if steps > 0 else None


def _accuracy(model, val_ds, verbose, phase):
    if val_ds is None:
        return None
    scores = model.evaluate(val_ds, verbose=0, return_dict=True)
    if "accuracy" not in scores:  # a box detector: its callers score mAP
        return None
    accuracy = float(scores["accuracy"])
    _say(verbose, f"{phase} validation accuracy: {accuracy:.4f}")
    return accuracy


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
