"""Channel stages: a pooled convolution run as one model per group of output channels (Pex, across models).

``converters.passes.split_pooled_convolutions`` runs a CONV_2D whose output only feeds a
channelwise pool (MEAN, AVERAGE_POOL_2D) a slice of filters at a time *inside* one model.
That model still holds every slice's TFLM structures and per-channel requantization
data (8 B per output channel) in its persistent section: for MobileNetV2's 1280-channel
last convolution, 13 KB. With one interpreter at a time, the largest model's persistent
section is what the arena reserves, so that tail sets it.

A channel stage makes each slice its own model::

    stage buffer k-1 (1,H,W,Cin) --group g: CONV_2D(filters c_g..c_g+1) -> pool--> (.., n_g) -> channels
                                                                                  [c_g, c_g+1) of stage k

every group reads the whole of the previous stage buffer and fills its channel range of
stage k's buffer (the pool's output: (1, C) or (1, h, w, C)); the tail reads that buffer.
The ops are ``channel_group_ops`` of the pass, so stage k is the pool's output bit for bit.
"""
import dataclasses

from converters.ir import Graph
from converters.passes import channel_group_ops, group_bounds, pair_parts, pooled_convolution_at, pooled_convolutions
from converters.patching.stage import (assemble_bundle, core_of, derived_model, partially_executed,
                                      stage_description, tail_graph)
from tinyvision.bundle import Box, BundleModel, Patch, Window, hwc
from tinyvision.errors import TinyVisionError


@dataclasses.dataclass(frozen=True)
class ChannelGroups:
    """The grid of a channel stage: the pooled convolution's output channels in ``parts`` near-equal groups.
    Written ``c<parts>`` in a chain of stages (``63:c12``)."""

    parts: int

    def __str__(self):
        return f"c{self.parts}"


def _groups(pair):
    """The pass's own choice of groups for a (CONV_2D, pool) pair; None where it would leave the pair whole."""
    parts = pair_parts(*pair)
    return ChannelGroups(parts) if parts > 1 else None


def default_groups(model, n):
    """The ``ChannelGroups`` ``split_pooled_convolutions`` would choose for a pooled convolution at op n of
    ``model`` (a ``Model``: ops n and n + 1 are a CONV_2D whose output only its pool reads), or None (no such
    pair, or one the pass would leave whole)."""
    pair = pooled_convolution_at(model.main, n)
    return None if pair is None else _groups(pair)


def next_pooled_convolution(model, a):
    """(n, ``default_groups(model, n)``) for the first pooled convolution at op n >= a of ``model`` that the
    pass would split and that leaves ops after its pool (a tail), or None."""
    last = len(model.main.ops) - 3
    return next(((n, _groups(pair)) for n, pair in pooled_convolutions(model.main).items()
                 if a <= n <= last and _groups(pair) is not None), None)


def split_channel_stage(model, n, groups, name="model.tflite", partial_tail=True, partial_expansions=False):
    """Split ``model`` (.tflite bytes or ``Model``) whose first ``n`` ops are a pooled convolution (n = 2:
    the CONV_2D reading the model's input, and its pool) into one model per channel group and a tail.

    groups: ``ChannelGroups`` or a group count (at most the convolution's output channels).
    Returns a ``Bundle`` (kind "patch_stage"): group g's patch reads the whole input and fills
    channels ``[c_g, c_{g+1})`` of the stage buffer (the pool's output); the tail runs ops n..
    (its own pooled convolutions, and with ``partial_expansions`` its strided expansions, split within it
    when ``partial_tail``).
    """
    model, data, core, edges = core_of(model, name)
    graph = core.main
    n -= edges.lead_ops
    parts = groups.parts if isinstance(groups, ChannelGroups) else groups
    pair = pooled_convolution_at(graph, 0) if n == 2 else None
    if pair is None or pair[0].inputs[0] is not graph.inputs[0]:
        raise TinyVisionError(f"{name}: a channel stage runs a CONV_2D on the input and the pool that alone reads "
                              f"it (2 ops); ops 0..{n - 1} are not that")
    conv, pool = pair
    x, z = conv.inputs[0], pool.outputs[0]
    channels = z.shape[-1]
    if not isinstance(parts, int) or not 2 <= parts <= channels:
        raise TinyVisionError(f"{name}: a channel stage needs 2 to {channels} groups of the convolution's "
                              f"{channels} channels, got {parts!r}")
    bounds = group_bounds(channels, parts)
    h, w, _ = hwc(z.shape)
    models, patches = [], []
    for g, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        ops, z_g = channel_group_ops(conv, pool, lo, hi, f"/group{g}")
        group = derived_model(model, Graph(ops=ops, inputs=[x], outputs=[z_g], tensors=[], name=graph.name))
        models.append(BundleModel.from_model(f"channels_{lo}_{hi - 1}", "patch", group.to_bytes(), group))
        patches.append(Patch(model=g, window=Window(x=0, y=0, w=x.shape[2], h=x.shape[1]),
                             output=Box(x=0, y=0, c=lo, w=w, h=h, channels=hi - lo)))
    tail = derived_model(model, tail_graph(graph, n, z))
    if partial_tail:
        tail = partially_executed(tail, partial_expansions)
    models.append(BundleModel.from_model("tail", "tail", tail.to_bytes(), tail))
    return assemble_bundle("patch_stage", model, data, name, x, [stage_description(z)], models, patches, edges)
