"""Design-time estimate of a patch tunnel's int8 activation memory, run group by group.

Model of the execution: one tunnel at a time, ops in order, every tensor int8 (1 B per
element) rounded up to TFLM's 16-byte alignment, a tensor alive from the op that
writes it to the last op that reads it. A ReorderedBottleneck with G groups runs
group g as expand_g -> depthwise_g -> project_g -> add into the running sum, so only
one E/G-channel slice of the expanded tensor exists at a time. The pooled vectors of
the tunnels already run stay alive until the merge.
"""
import math

import tinyvision  # noqa: F401
import tensorflow as tf

from tinyvision.layers import PatchTunnel, ReorderedBottleneck

layers = tf.keras.layers

ALIGN = 16


def aligned(elements):
    """Bytes of an int8 tensor of ``elements`` values in a TFLM arena."""
    return -(-elements // ALIGN) * ALIGN


def _block_steps(block, h, w, c):
    """Live bytes per step of a ReorderedBottleneck on a (h, w, c) input, and its output shape."""
    oh, ow = math.ceil(h / block.stride), math.ceil(w / block.stride)
    x = aligned(h * w * c)
    out = aligned(oh * ow * block.filters)
    steps = []
    running = 0  # the sum of the projections of the groups done so far
    last = len(block.group_channels) - 1
    for g, e in enumerate(block.group_channels):
        tag = f"{block.name}/g{g}"
        # x is read by every group's expand (the depthwise when expansion == 1) and the residual
        x_after = x if (block.residual is not None or g < last) else 0
        dw = aligned(oh * ow * e)
        if block.expansion == 1:
            steps.append((f"{tag} depthwise", x + dw))
        else:
            expanded = aligned(h * w * e)
            steps.append((f"{tag} expand", x + running + expanded))
            steps.append((f"{tag} depthwise", x_after + running + expanded + dw))
        steps.append((f"{tag} project", x_after + running + dw + out))
        if g > 0:
            steps.append((f"{tag} sum", x_after + running + out + out))
        running = out
    if block.residual is not None:
        steps.append((f"{block.name} residual", x + running + out))
    return steps, (oh, ow, block.filters)


def tunnel_steps(tunnel, patch_shape, finished_tunnels=0):
    """``[(step, live bytes), ...]`` for one tunnel of a built PatchTunnel on a (h, w, c) patch.

    ``finished_tunnels`` pooled vectors of earlier tunnels are counted as alive.
    """
    h, w, c = patch_shape
    pooled = aligned(finished_tunnels * tunnel.out_channels)
    steps = []
    for layer in tunnel.path(0):
        if isinstance(layer, ReorderedBottleneck):
            block_steps, (h, w, c) = _block_steps(layer, h, w, c)
            steps += block_steps
        elif type(layer) is layers.Conv2D:
            sh, sw = layer.strides
            oh, ow = math.ceil(h / sh), math.ceil(w / sw)
            steps.append((layer.name, aligned(h * w * c) + aligned(oh * ow * layer.filters)))
            h, w, c = oh, ow, layer.filters
        elif isinstance(layer, layers.GlobalAveragePooling2D):
            steps.append((layer.name, aligned(h * w * c) + aligned(c)))
    return [(name, live + pooled) for name, live in steps]


def tunnel_peak(model):
    """Largest live int8 bytes over every tunnel of every PatchTunnel in ``model``, and where.

    Each tunnel is fed its own patch shape, with the pooled outputs of the tunnels
    before it alive. Returns ``(peak_bytes, step_name)``; (0, None) without tunnels.
    """
    best = (0, None)
    for layer in model.layers:
        if isinstance(layer, PatchTunnel):
            shapes = layer.input_shape
            shapes = shapes if isinstance(shapes, list) else [shapes]
            for i, shape in enumerate(shapes):
                for name, live in tunnel_steps(layer, tuple(shape[1:]), finished_tunnels=i):
                    best = max(best, (live, name), key=lambda b: b[0])
    return best
