"""flatten: a model of tinyvision composite layers -> the same model in builtin Keras layers."""
import collections

import tinyvision  # noqa: F401
import tensorflow as tf
from tensorflow_model_optimization.python.core.quantization.keras.quantize_annotate import (
    QuantizeAnnotate)

from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import Composite, inline_composites
from tinyvision.layers.qat import BNBeforeReLUConfig, BNOutputConfig, ConvBeforeBNConfig

layers = tf.keras.layers


def _rebuild(model, call_node):
    """Replay ``model``'s graph on its own inputs, ``call_node(node, args, kwargs)`` per node.

    ``args``/``kwargs`` are the node's call arguments with every tensor replaced by its
    replayed counterpart; the returned model shares ``model``'s inputs.
    """
    replayed = {id(t): t for t in model.inputs}

    def swap(x):
        return replayed.get(id(x), x)

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = tf.nest.map_structure(swap, (node.call_args, node.call_kwargs))
            outputs = call_node(node, args, kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                replayed[id(old)] = new
    outputs = tf.nest.map_structure(swap, model._nested_outputs)
    return tf.keras.Model(model.inputs, outputs, name=model.name)


def _unchanged(node, args, kwargs):
    flat_old = tf.nest.flatten((node.call_args, node.call_kwargs))
    return all(a is b for a, b in zip(flat_old, tf.nest.flatten((args, kwargs))))


def _expand(node, args, kwargs):
    layer = node.layer
    if isinstance(layer, tf.keras.Model):
        raise TinyVisionError(f"flatten: nested model {layer.name!r} is not supported")
    if isinstance(layer, Composite):
        # call() only calls sublayers, so on symbolic inputs (composites inlined) it adds
        # nodes for the builtin ones alone.
        with inline_composites():
            return layer(*args, **kwargs)
    if _unchanged(node, args, kwargs):
        return node.outputs
    return layer(*args, **kwargs)


def _uses(model):
    """layer -> number of calls in ``model``; layer -> classes of the layers consuming it."""
    calls = collections.Counter()
    consumers = collections.defaultdict(set)
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.is_input:
                continue
            calls[node.layer] += 1
            for t in tf.nest.flatten((node.call_args, node.call_kwargs)):
                history = getattr(t, "_keras_history", None)
                if history is not None:
                    consumers[history.layer].add(type(node.layer))
    return calls, consumers


def _annotate_shared(model):
    """Wrap shared Conv/BN layers in QuantizeAnnotate so tfmot ``quantize_model`` accepts them.

    tfmot folds Conv -> BN (-> ReLU) patterns only for layers called once; a shared
    BatchNormalization is otherwise "not supported". The configs here are the ones
    tfmot's own Conv+BN transforms assign: the conv quantizes its weights but not its
    output, the BN quantizes its output unless a ReLU follows (the ReLU does).
    """
    calls, consumers = _uses(model)

    def config(layer):
        if calls[layer] < 2:
            return None
        if isinstance(layer, layers.BatchNormalization):
            if consumers[layer] and all(issubclass(c, layers.ReLU) for c in consumers[layer]):
                return BNBeforeReLUConfig()
            return BNOutputConfig()
        if (isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))
                and layer.get_config()["activation"] == "linear" and consumers[layer]
                and all(issubclass(c, layers.BatchNormalization) for c in consumers[layer])):
            attr = "depthwise_kernel" if isinstance(layer, layers.DepthwiseConv2D) else "kernel"
            return ConvBeforeBNConfig([attr])
        return None

    wrappers = {}

    def call_node(node, args, kwargs):
        layer = node.layer
        if layer not in wrappers:
            cfg = config(layer)
            wrappers[layer] = layer if cfg is None else QuantizeAnnotate(
                layer, quantize_config=cfg, name=f"{layer.name}_annotated")
        return wrappers[layer](*args, **kwargs)

    if not any(config(layer) for layer in calls):
        return model
    return _rebuild(model, call_node)


def flatten(model, annotate_shared=True):
    """Rebuild ``model`` as a functional model of builtin Keras layers only.

    Every tinyvision composite layer (InputSegmentation, InvertedResidual,
    ReorderedBottleneck, PatchTunnel) is replaced by the sublayer calls of its
    ``call``, recursively. The sublayer objects are reused, so weights are shared with
    ``model`` and the outputs are identical; a shared PatchTunnel's layers become
    layers called once per tunnel. Use the result for tfmot QAT
    (``tfmot.quantization.keras.quantize_model(flatten(model))``), which does not look
    inside custom layers.

    With ``annotate_shared`` (default) the layers called more than once that tfmot
    cannot handle itself (Conv/DepthwiseConv feeding a BN, and that BN) are wrapped in
    ``tfmot.quantization.keras.QuantizeAnnotate`` with the configs tfmot would give
    them unshared; these wrappers are transparent in float. Models without shared
    layers come back with builtin layers only either way.
    """
    if not getattr(model, "_is_graph_network", False):
        raise TinyVisionError("flatten needs a functional or Sequential Keras model")
    if any(isinstance(layer, Composite) for layer in model.layers):
        model = _rebuild(model, _expand)
    return _annotate_shared(model) if annotate_shared else model
