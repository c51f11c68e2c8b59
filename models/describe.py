"""Static model statistics: parameters, MACs, int8 flash estimate, receptive field."""
import numpy as np

import tinyvision  # noqa: F401
import tensorflow as tf

from tinyvision.layers import flatten

layers = tf.keras.layers
_WEIGHTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


def _calls(model):
    """(layer, input shape, output shape) for every call in the flattened model, in order."""
    flat = flatten(model, annotate_shared=False)
    for depth in sorted(flat._nodes_by_depth, reverse=True):
        for node in flat._nodes_by_depth[depth]:
            if not node.is_input:
                inputs = tf.nest.flatten(node.call_args)
                outputs = tf.nest.flatten(node.outputs)
                yield node.layer, tuple(inputs[0].shape), tuple(outputs[0].shape)


def _macs(layer, in_shape, out_shape):
    positions = int(np.prod(out_shape[1:-1]))
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return positions * out_shape[-1] * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return positions * out_shape[-1] * kh * kw * in_shape[-1] // layer.groups
    if isinstance(layer, layers.Dense):
        return positions * in_shape[-1] * out_shape[-1]
    return 0


def _flash(layer):
    """int8 bytes of one weighted layer: 1 B per kernel weight, 4 B (int32) per bias.

    Every output channel gets a bias: its own, or the BN folded into it.
    """
    kernel = layer.depthwise_kernel if isinstance(layer, layers.DepthwiseConv2D) else layer.kernel
    out_channels = kernel.shape[-2] * kernel.shape[-1] if isinstance(
        layer, layers.DepthwiseConv2D) else kernel.shape[-1]
    return int(np.prod(kernel.shape)) + 4 * out_channels


def macs(model):
    """Multiply-accumulates of the Conv2D / DepthwiseConv2D / Dense layers for one image.

    A shared layer counts once per call. Walks ``flatten(model)``: seconds for big models.
    """
    return int(sum(_macs(*call) for call in _calls(model)))


def flash_bytes(model):
    """int8 flash estimate of the weights: 1 B per kernel weight, 4 B per output-channel bias.

    BN is taken as folded into the conv before it; shared layers count once;
    quantization parameters and graph metadata are not included.
    """
    weighted = [m for m in model.submodules if isinstance(m, _WEIGHTED) and m.built]
    return int(sum(_flash(layer) for layer in weighted))


def describe(model):
    """``{"name", "params", "macs", "flash_bytes"}`` of a Keras model (composite layers allowed).

    ``params`` counts all weights (BN included) once; see ``macs`` and ``flash_bytes``.
    """
    return {"name": model.name, "params": int(model.count_params()), "macs": macs(model),
            "flash_bytes": flash_bytes(model)}


def receptive_field(model, max_stride=None):
    """Receptive field (pixels) and stride of a chain of convs, stopping before stride > max_stride.

    Walks the Conv2D / DepthwiseConv2D layers in graph order, each adding
    (k - 1) * current stride. Exact for chain-like models whose convs all lie on the
    main path (MobileNetV2: residual branches are identities); ``max_stride=8`` gives
    the per-patch stage of a patch-based MobileNetV2.
    """
    field, stride = 1, 1
    for layer, _, _ in _calls(model):
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            (kh, _), (sh, _) = layer.kernel_size, layer.strides
            if max_stride is not None and stride * sh > max_stride:
                break
            field += (kh - 1) * stride
            stride *= sh
    return field, stride
