"""See SPACE_TO_BATCH_ND -> convolution -> BATCH_TO_SPACE_ND as the dilated convolution it computes.

The TFLite converter lowers a Keras convolution with ``dilation_rate`` d to
SPACE_TO_BATCH_ND (block d, pads with the zero point) -> CONV_2D or
DEPTHWISE_CONV_2D (VALID, stride 1) -> BATCH_TO_SPACE_ND (block d, crops). Output
row r of that chain reads padded input rows r + crop + k * d, i.e. input rows
r - (pad_before - crop) + k * d: a convolution with dilation d and
``pad_before - crop`` rows of zero padding before. When that is TFLite's SAME or
VALID padding for the output size, the chain is replaced (for the patch stage
only) by one native dilated op with the same weights, bias and quantization,
which computes the same accumulators and so the same int8 outputs.
"""
import copy

import numpy as np

from converters.ir import Op
from converters.patching import geometry as geo


def _block(op):
    t = op.inputs[1]
    if t is None or not t.is_constant or t.size != 2:
        return None
    return [int(v) for v in np.asarray(t.data).reshape(-1)]


def _pairs(t):
    if t is None or not t.is_constant or t.size != 4:
        return None
    return np.asarray(t.data, dtype=np.int64).reshape(2, 2)


def _same_quant(a, b):
    qa, qb = a.quantization, b.quantization
    return (qa is not None and qb is not None and np.array_equal(qa.scale, qb.scale)
            and np.array_equal(qa.zero_point, qb.zero_point))


def fuse_chain(s2b, conv, b2s, readers):
    """The dilated op equivalent to the three ops, or None when they are not that pattern."""
    if (s2b.opcode != "SPACE_TO_BATCH_ND" or conv.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D")
            or b2s.opcode != "BATCH_TO_SPACE_ND"):
        return None
    x, mid, y, out = s2b.inputs[0], s2b.outputs[0], conv.outputs[0], b2s.outputs[0]
    if conv.inputs[0] is not mid or b2s.inputs[0] is not y or readers.get(mid) != [conv] or readers.get(y) != [b2s]:
        return None
    block, pads, crops = _block(s2b), _pairs(s2b.inputs[2]), _pairs(b2s.inputs[2])
    if block is None or block != _block(b2s) or pads is None or crops is None:
        return None
    o = conv.options
    if (o.padding != geo.VALID or o.strideH != 1 or o.strideW != 1 or max(o.dilationHFactor, 1) != 1
            or max(o.dilationWFactor, 1) != 1):
        return None
    if len(x.shape) != 4 or len(out.shape) != 4 or x.shape[0] != 1 or out.shape[0] != 1:
        return None
    if not (_same_quant(x, mid) and _same_quant(y, out)):
        return None
    kh, kw = conv.inputs[1].shape[1], conv.inputs[1].shape[2]
    padding = set()
    for axis, d, k in ((1, block[0], kh), (2, block[1], kw)):
        eff = (k - 1) * d + 1
        before = int(pads[axis - 1][0] - crops[axis - 1][0])
        size, out_size = x.shape[axis], out.shape[axis]
        if out_size == size and before == geo.same_pad_before(size, size, 1, eff):
            padding.add(geo.SAME)
        elif before == 0 and out_size == size - eff + 1:
            padding.add(geo.VALID)
        else:
            return None
    if len(padding) != 1:
        return None
    options = copy.copy(o)
    options.padding = padding.pop()
    options.dilationHFactor, options.dilationWFactor = block
    return Op(conv.opcode, [x] + list(conv.inputs[1:]), [out], options, max(conv.version, 2), conv.custom_code,
              conv.custom_options, conv.options2)


def stage_view(graph):
    """[(op, end)]: the graph's ops with dilated chains fused; ``end`` = original op count up to and including it."""
    readers = graph.consumers()
    ops, view, i = graph.ops, [], 0
    while i < len(ops):
        fused = fuse_chain(*ops[i:i + 3], readers) if i + 3 <= len(ops) else None
        if fused is not None:
            view.append((fused, i + 3))
            i += 3
        else:
            view.append((ops[i], i + 1))
            i += 1
    return view
