"""Partial execution (Pex): run a convolution followed by a pool a slice of output channels at a time.

A network's tail often ends in a wide 1x1 convolution whose output only feeds a
global pool, e.g. keras MobileNetV2(alpha=0.35) at 144 px::

    x (1,5,5,112) --CONV_2D 1x1, 1280 filters--> y (1,5,5,1280) --MEAN axes (1,2)--> z (1,1280) --> ...

y (32,000 B) is live only to be pooled, and it is the tail's peak. Every output
channel of a convolution depends on its own filter and bias only, and a MEAN
over axes other than the channel axis (or an AVERAGE_POOL_2D) treats every
channel on its own, so the pair can run in k parts, each with a slice of the
filters::

    y_i = CONV_2D(x, filter[c_i:c_{i+1}], bias[c_i:c_{i+1}])  (1,5,5,n_i)   y's quantization
    z_i = MEAN(y_i, same axes and keep_dims)                  (1,n_i)      z's quantization
    z   = CONCATENATION(z_0 .. z_{k-1}, axis=last)            (1,1280)     z's quantization

and the ops run depth-first (conv_0, mean_0, conv_1, mean_1, ...), so only one
y_i is live at a time. The result is bit-identical: per-channel weight scales
and zero points are sliced with the filters, and the int8 kernels
(TFLite and TFLM) compute each output channel from that channel's values and
the tensor-wide parameters alone:

* CONV_2D requantizes channel c with filter scale c (or the one per-tensor scale);
* TFLM's int8 MEAN (reduce_common.cc -> reference_ops::QuantizedMeanOrSum) sums
  each output element over the reduced axes and rescales with a multiplier
  derived from the input/output scales and the number of reduced elements, the
  same for every slice; there is no int8 special case by shape or parameters;
* CONCATENATION of int8 tensors that share the output's scale and zero point
  copies bytes (TFLM's int8 kernel always copies; TFLite requires equal
  parameters for int8 and copies).

TFLM's CONCATENATION takes at most 10 inputs (kMaxInputNum in concatenation.cc),
so more parts are concatenated as a balanced tree of CONCATENATIONs of at most
10 inputs each, each emitted as soon as its parts are done.

Choice of k: the smallest k whose largest slice y_i is no larger than
max(bytes of x, bytes of z), so y_i is no longer what dominates (MobileNetV2
above: 32,000 B / 2,800 B -> slices of at most 112 channels -> k = 12), capped
at ``max_parts`` and the channel count. An automatically chosen split is kept
only when the live bytes of the region drop (the concatenation's output is
live beside its inputs, which can cost more than it saves for small y).

The same holds for an inverted bottleneck's expansion followed by a strided
depthwise convolution (``split_strided_expansions``): a DEPTHWISE_CONV_2D of
depth multiplier 1 computes each output channel from its own input channel,
filter column and bias, requantized with that channel's scale, so the pair runs
group by group too. With stride 2 the depthwise output is a quarter of the
expansion, and the expansion, not the output, is what dominates (MobileNetV2
0.35 at 144 px, block 1: 72x72x48 = 248,832 B expanded, 36x36x48 = 62,208 B
out). A stride-1 depthwise gains nothing: the concatenated output is as large
as the expansion it replaces.
"""
import copy
import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from converters.ir.graph import Model, Op, Tensor
from converters.passes.reorder import live_bytes_per_op
from converters.planning.metadata import METADATA_NAME as OFFLINE_PLAN_METADATA
from tinyvision.errors import TinyVisionError

DEFAULT_MAX_PARTS = 16
MAX_CONCAT_INPUTS = 10  # TFLM concatenation.cc kMaxInputNum
CONCATENATION_INT8_VERSION = 2  # TFLite op_version.cc: CONCATENATION with int8 inputs

# Pools that treat every channel independently (an NHWC tensor's channel axis is its last); a
# DEPTHWISE_CONV_2D counts when it pools to 1x1 (``converters.passes.board_mean`` writes a rescaling
# global-average MEAN as one).
_POOLS = frozenset({"MEAN", "AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D"})


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """One CONV_2D -> pool pair the pass found (bytes as in ``reorder.live_bytes_per_op``).

    conv_output: name of the convolution's output y; pool: "MEAN", "AVERAGE_POOL_2D" or a 1x1 "DEPTHWISE_CONV_2D";
    channels: output channels of the convolution; parts: k, 1 when the pair was left whole.
    peak_before/peak_after: the most live bytes while the region (the ops from the convolution
    to the pool, and whatever ran between them) runs, before and after the split.
    """

    conv_output: str
    pool: str
    channels: int
    parts: int
    peak_before: int
    peak_after: int

    @property
    def split(self):
        return self.parts > 1

    @property
    def saved_bytes(self):
        return self.peak_before - self.peak_after


def split_pooled_convolutions(graph_or_model, max_parts=DEFAULT_MAX_PARTS, parts=None):
    """Split every CONV_2D whose output only feeds a channelwise pool into channel groups (in place).

    graph_or_model: a ``converters.ir`` ``Graph`` or ``Model`` (every subgraph).
    max_parts: upper bound for the automatic choice of k.
    parts: force k for every pair (capped at its channel count; 1 leaves them whole); the
        split is then made even where the region's live bytes do not drop.
    A model that changes loses its OfflineMemoryAllocation metadata: the plan indexes the old tensors.
    Returns a list of ``SplitResult``, one per pair found, in graph order.
    """
    if not isinstance(max_parts, int) or max_parts < 1:
        raise TinyVisionError(f"max_parts must be a positive integer, got {max_parts!r}")
    if parts is not None and (not isinstance(parts, int) or parts < 1):
        raise TinyVisionError(f"parts must be a positive integer, got {parts!r}")
    if not isinstance(graph_or_model, Model):
        return _split_graph(graph_or_model, max_parts, parts)
    results = [r for g in graph_or_model.subgraphs for r in _split_graph(g, max_parts, parts)]
    if any(r.split for r in results):
        graph_or_model.metadata.pop(OFFLINE_PLAN_METADATA, None)
    return results


def split_strided_expansions(graph_or_model, max_parts=DEFAULT_MAX_PARTS):
    """Split every CONV_2D whose output only feeds a strided DEPTHWISE_CONV_2D of depth multiplier 1 (an
    inverted bottleneck's expansion and its stride-2 depthwise) into channel groups (in place), where that
    lowers the region's live bytes. Same arguments, result and metadata rule as ``split_pooled_convolutions``
    (``SplitResult.pool`` is "DEPTHWISE_CONV_2D")."""
    if not isinstance(max_parts, int) or max_parts < 1:
        raise TinyVisionError(f"max_parts must be a positive integer, got {max_parts!r}")
    if not isinstance(graph_or_model, Model):
        return _split_graph(graph_or_model, max_parts, None, _expansion_pairs)
    results = [r for g in graph_or_model.subgraphs for r in _split_graph(g, max_parts, None, _expansion_pairs)]
    if any(r.split for r in results):
        graph_or_model.metadata.pop(OFFLINE_PLAN_METADATA, None)
    return results


def split_pooled_convolutions_tflite(model_bytes, max_parts=DEFAULT_MAX_PARTS, parts=None, name="model"):
    """``split_pooled_convolutions`` on a .tflite flatbuffer: returns (bytes, [SplitResult]).

    The input bytes come back unchanged when nothing is split.
    """
    model = Model.from_bytes(model_bytes, name=name)
    results = split_pooled_convolutions(model, max_parts, parts)
    if not any(r.split for r in results):
        return model_bytes, results
    return model.to_bytes(), results


def choose_parts(x_bytes, y_bytes, z_bytes, channels, max_parts=DEFAULT_MAX_PARTS):
    """The smallest k whose largest near-equal slice of y (ceil(channels / k) channels) takes no
    more than max(x_bytes, z_bytes), capped at ``max_parts`` and ``channels``."""
    bytes_per_channel = y_bytes // channels
    widest = max(1, max(x_bytes, z_bytes) // bytes_per_channel)  # channels one slice may hold
    return min(-(-channels // widest), max_parts, channels)


def group_bounds(channels, k):
    """Channel bounds of k near-equal groups (sizes differ by at most 1): [0, .., channels]."""
    return [channels * i // k for i in range(k + 1)]


def pair_parts(conv, pool, max_parts=DEFAULT_MAX_PARTS):
    """``choose_parts`` for a (CONV_2D, pool) pair: the k the pass splits it into by itself."""
    x, y, z = conv.inputs[0], conv.outputs[0], pool.outputs[0]
    return choose_parts(x.nbytes, y.nbytes, z.nbytes, y.shape[-1], max_parts)


def _split_graph(graph, max_parts, parts, find_pairs=None):
    results = []
    for conv, pool in (find_pairs or _pairs)(graph):
        pads = _pads_between(graph, conv, pool)
        y = conv.outputs[0]
        channels = y.shape[-1]
        if parts is None:
            k = pair_parts(conv, pool, max_parts)
        else:
            k = min(parts, channels)
        first, last = graph.ops.index(conv), graph.ops.index(pool)
        before = max(live_bytes_per_op(graph)[first : last + 1])
        after = before
        if k > 1:
            new_ops = _partial_ops(conv, pool, k, pads)
            # The parts take the convolution's place; ops that ran between it and the pool follow them.
            between = [op for op in graph.ops[first + 1 : last] if not any(op is pad for pad in pads)]
            order = graph.ops[:first] + new_ops + between + graph.ops[last + 1 :]
            candidate = dataclasses.replace(graph, ops=order)
            after = max(live_bytes_per_op(candidate)[first : first + len(new_ops) + len(between)])
            if parts is not None or after < before:
                graph.ops = order
                graph.prune_tensors()
            else:
                k, after = 1, before
        results.append(SplitResult(y.name, pool.opcode, channels, k, before, after))
    return results


def _pairs(graph):
    """(CONV_2D, pool) pairs where the convolution's output feeds only that pool and is no graph output."""
    return [(conv, reader) for conv, reader, _, _ in _single_reader_convolutions(graph)
            if _channelwise_pool(reader, conv.outputs[0])]


def _expansion_pairs(graph):
    """(CONV_2D, DEPTHWISE_CONV_2D) pairs where the convolution's output feeds only that depthwise (directly or
    through one spatial PAD, as a border patch's asymmetric padding), which is channelwise and smaller than the
    expansion (strided, or VALID over a patch's halo), and neither is a graph output."""
    found = []
    for conv, depthwise, readers, outputs in _single_reader_convolutions(graph):
        y = conv.outputs[0]
        if _spatial_pad(depthwise) and depthwise.outputs[0] not in outputs:
            after_pad = readers.get(depthwise.outputs[0], [])
            depthwise = after_pad[0] if len(after_pad) == 1 else None
        if (depthwise is not None and depthwise.opcode == "DEPTHWISE_CONV_2D" and len(depthwise.outputs) == 1
                and _channelwise_depthwise(depthwise) and not _global_depthwise(depthwise)  # that is a pool
                and depthwise.outputs[0].shape[-1] == y.shape[-1]
                and _int8_activation(depthwise.outputs[0]) and depthwise.outputs[0].nbytes < y.nbytes):
            found.append((conv, depthwise))
    return found


def _single_reader_convolutions(graph):
    """(CONV_2D, the one op reading its output, graph.consumers(), the graph's outputs) for each sliceable
    convolution whose output has one reader and is no graph output."""
    readers = graph.consumers()
    outputs = set(graph.outputs)
    for op in graph.ops:
        if op.opcode != "CONV_2D" or len(op.outputs) != 1 or not _sliceable_conv(op):
            continue
        consumers = readers.get(op.outputs[0], [])  # an op reading y twice is listed twice
        if op.outputs[0] not in outputs and len(consumers) == 1:
            yield op, consumers[0], readers, outputs


def _spatial_pad(op):
    """A PAD of an int8 NHWC activation along height and width only (constant paddings; it keeps the
    quantization and fills with the zero point, the same for every channel)."""
    if op.opcode != "PAD" or len(op.inputs) != 2 or len(op.outputs) != 1:
        return False
    paddings = op.inputs[1]
    return (_int8_activation(op.inputs[0]) and paddings.is_constant and tuple(paddings.shape) == (4, 2)
            and not paddings.data[0].any() and not paddings.data[3].any())


def _pads_between(graph, conv, pool):
    """The PAD ops from ``conv``'s output to ``pool``'s input (none when the pool reads it directly)."""
    pads, t = [], pool.inputs[0]
    producers = graph.producers()
    while t is not conv.outputs[0]:
        pad = producers[t]
        pads.insert(0, pad)
        t = pad.inputs[0]
    return tuple(pads)


def _int8_activation(t):
    return (t is not None and not t.is_constant and np.dtype(t.dtype) == np.int8 and len(t.shape) == 4
            and t.quantization is not None and not t.quantization.per_channel)


def _per_output_channel(t, channels):
    """Constant ``t`` has ``channels`` rows along axis 0, and per-channel quantization (if any) along it."""
    q = t.quantization
    return (t.is_constant and t.shape and t.shape[0] == channels
            and (q is None or not q.per_channel
                 or (q.axis == 0 and q.scale.size == channels and q.zero_point.size == channels)))


def _sliceable_conv(conv):
    """An int8 CONV_2D with constant filters and bias (or none) that can be cut along output channels."""
    if len(conv.inputs) not in (2, 3) or not _int8_activation(conv.inputs[0]) or not _int8_activation(conv.outputs[0]):
        return False
    channels = conv.outputs[0].shape[-1]
    filters, bias = conv.inputs[1], conv.inputs[2] if len(conv.inputs) == 3 else None
    return (channels > 1 and np.dtype(filters.dtype) == np.int8 and len(filters.shape) == 4
            and _per_output_channel(filters, channels) and (bias is None or _per_output_channel(bias, channels)))


def _channelwise_pool(pool, y):
    """Whether ``pool`` reads y once and computes each output channel from y's same channel only."""
    if pool.opcode not in _POOLS or len(pool.outputs) != 1 or pool.inputs[0] is not y:
        return False
    z = pool.outputs[0]
    if np.dtype(z.dtype) != np.int8 or z.quantization is None or z.quantization.per_channel:
        return False
    if not z.shape or z.shape[-1] != y.shape[-1]:
        return False
    if pool.opcode == "AVERAGE_POOL_2D":
        return len(pool.inputs) == 1
    if pool.opcode == "DEPTHWISE_CONV_2D":
        return _global_depthwise(pool)
    axes = pool.inputs[1] if len(pool.inputs) == 2 else None
    if axes is None or not axes.is_constant or not np.issubdtype(axes.dtype, np.integer):
        return False
    rank = len(y.shape)
    return all(-rank <= a < rank for a in axes.data.ravel()) and rank - 1 not in {a % rank for a in axes.data.ravel()}


def _global_depthwise(op):
    """A ``_channelwise_depthwise`` whose output is 1x1: a global pool, each channel on its own."""
    return _channelwise_depthwise(op) and tuple(op.outputs[0].shape[1:3]) == (1, 1)


def _channelwise_depthwise(op):
    """A DEPTHWISE_CONV_2D of depth multiplier 1 with constant int8 weights (1, kh, kw, C) (per-channel
    scales along axis 3, if any) and bias: each output channel from its own input channel."""
    if len(op.inputs) not in (2, 3) or op.options is None or op.options.depthMultiplier != 1:
        return False
    z, weights = op.outputs[0], op.inputs[1]
    bias = op.inputs[2] if len(op.inputs) == 3 else None
    channels = z.shape[-1]
    q = weights.quantization
    return (len(z.shape) == 4 and weights.is_constant
            and np.dtype(weights.dtype) == np.int8 and len(weights.shape) == 4 and weights.shape[3] == channels
            and (q is None or not q.per_channel or (q.axis == 3 and q.scale.size == channels))
            and (bias is None or _per_output_channel(bias, channels)))


def _partial_ops(conv, pool, k, pads=()):
    """The ops that replace ``conv``, ``pads`` and ``pool``: k (conv_i, pads_i, pool_i) groups and the
    concatenations that assemble z, in depth-first order."""
    z = pool.outputs[0]
    bounds = group_bounds(z.shape[-1], k)

    def part(i):
        return channel_group_ops(conv, pool, bounds[i], bounds[i + 1], f"/part{i}", pads)

    def assemble(lo, hi, out):
        """Ops computing parts lo..hi-1 and their concatenation into ``out``."""
        span = 1  # parts per input of this concatenation: the smallest power of 10 that needs <= 10 inputs
        while span * MAX_CONCAT_INPUTS < hi - lo:
            span *= MAX_CONCAT_INPUTS
        n = -(-(hi - lo) // span)
        ops, pieces = [], []
        for j in range(n):
            a, b = lo + (hi - lo) * j // n, lo + (hi - lo) * (j + 1) // n
            if b - a == 1:
                part_ops, piece = part(a)
            else:
                piece = _channel_slice_of(z, bounds[b] - bounds[a], f"{z.name}/parts{a}-{b - 1}")
                part_ops = assemble(a, b, piece)
            ops += part_ops
            pieces.append(piece)
        options = schema.ConcatenationOptionsT()
        options.axis = len(z.shape) - 1
        options.fusedActivationFunction = schema.ActivationFunctionType.NONE
        return ops + [_concatenation(pieces, out, options)]

    return assemble(0, k, z)


def channel_group_ops(conv, pool, lo, hi, suffix, pads=()):
    """([conv_g, *pads_g, pool_g], z_g): ``conv``, the spatial ``pads`` between them and ``pool`` on output
    channels lo..hi-1 only (filters, bias and their per-channel quantization sliced; z_g like the pool's
    output with hi - lo channels). Tensor names get ``suffix``. The result equals channels lo..hi-1 of the
    pair's output, bit for bit."""
    x, y, z = conv.inputs[0], conv.outputs[0], pool.outputs[0]
    inputs = [x] + [None if t is None else _slice_constant(t, lo, hi, suffix) for t in conv.inputs[1:]]
    y_g = _channel_slice_of(y, hi - lo, y.name + suffix)
    z_g = _channel_slice_of(z, hi - lo, z.name + suffix)
    pad_ops = []
    for pad in pads:  # paddings are spatial: the same constant for every group
        padded = _channel_slice_of(pad.outputs[0], hi - lo, pad.outputs[0].name + suffix)
        pad_ops.append(dataclasses.replace(pad, inputs=[y_g] + pad.inputs[1:], outputs=[padded],
                                           options=copy.deepcopy(pad.options)))
        y_g = padded
    pool_inputs = [y_g] + pool.inputs[1:]  # a pool's axes stay
    if pool.opcode == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C), bias (C)
        pool_inputs = [y_g, _slice_constant(pool.inputs[1], lo, hi, suffix, axis=3)] + [
            None if t is None else _slice_constant(t, lo, hi, suffix) for t in pool.inputs[2:]]
    conv_g = dataclasses.replace(conv, inputs=inputs, outputs=[pad_ops[0].inputs[0] if pad_ops else y_g],
                                 options=copy.deepcopy(conv.options))
    pool_g = dataclasses.replace(pool, inputs=pool_inputs, outputs=[z_g], options=copy.deepcopy(pool.options))
    return [conv_g, *pad_ops, pool_g], z_g


def pooled_convolutions(graph):
    """{op index: (CONV_2D, pool)} of the pairs ``split_pooled_convolutions`` would split whose pool is the op
    right after the convolution, in graph order."""
    index = {id(op): i for i, op in enumerate(graph.ops)}
    return {index[id(conv)]: (conv, pool) for conv, pool in _pairs(graph) if index[id(pool)] == index[id(conv)] + 1}


def pooled_convolution_at(graph, index):
    """The pair of ``pooled_convolutions`` whose convolution is op ``index``, or None."""
    return pooled_convolutions(graph).get(index)


def _concatenation(inputs, output, options):
    return Op("CONCATENATION", list(inputs), [output], options, version=CONCATENATION_INT8_VERSION)


def _channel_slice_of(t, channels, name):
    """A new activation like ``t`` with ``channels`` in its last (channel) axis; same quantization."""
    shape = tuple(t.shape[:-1]) + (channels,)
    signature = None if t.shape_signature is None else tuple(t.shape_signature[:-1]) + (channels,)
    return Tensor(name, shape, t.dtype, quantization=copy.deepcopy(t.quantization), shape_signature=signature)


def _slice_constant(t, lo, hi, suffix, axis=0):
    """Channels lo..hi-1 (along ``axis``) of a filter or bias, with its per-channel scales and zero points."""
    q = t.quantization
    if q is not None and q.per_channel:
        q = dataclasses.replace(q, scale=q.scale[lo:hi].copy(), zero_point=q.zero_point[lo:hi].copy())
    else:
        q = copy.deepcopy(q)
    data = np.ascontiguousarray(np.take(t.data, range(lo, hi), axis=axis))
    signature = None
    if t.shape_signature is not None:
        signature = tuple(hi - lo if i == axis else d for i, d in enumerate(t.shape_signature))
    return Tensor(t.name + suffix, data.shape, t.dtype, data=data, quantization=q, shape_signature=signature)
