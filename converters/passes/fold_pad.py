"""Fold an explicit zero-point PAD into the convolution after it (SAME padding), as exporters should have.

PyTorch exports pad every 3x3 convolution with a PAD op and run it VALID: the padded copy of the
input (16x16x576 before a 14x14 depthwise) is a whole extra activation. When the PAD adds exactly
the rows and columns TFLite's SAME padding would, with the zero point, the convolution with SAME
padding on the unpadded input reads the same taps: a zero-point tap contributes
``(zp - zp) * w = 0``, and TFLM's int8 kernels skip the taps outside the image. So the fold changes
no value (``optimize_tflite`` checks the rewritten model on TFLM all the same). Only stride-1
convolutions are folded: there TFLite's converter itself writes SAME, so models it made keep their
op list (and the op counts ``--patches`` chains name); a stride-2 PyTorch convolution pads 1 before,
where SAME pads after, and keeps its PAD either way.
"""
from converters.patching import geometry as geo

_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def _zero_point_pad(op):
    """True for a PAD (or PADV2 whose value is the zero point) of H and W only."""
    if op.opcode not in geo.PADS or op.inputs[1] is None or not op.inputs[1].is_constant:
        return False
    x, out = op.inputs[0], op.outputs[0]
    if len(x.shape) != 4 or x.quantization is None or out.quantization is None:
        return False
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] is not None:
        value = op.inputs[2]
        if not value.is_constant or int(value.data.reshape(-1)[0]) != int(out.quantization.zero_point.reshape(-1)[0]):
            return False
    pads = geo.pad_amounts(op)
    same_quant = (list(x.quantization.scale) == list(out.quantization.scale)
                  and list(x.quantization.zero_point) == list(out.quantization.zero_point))
    return pads.shape == (4, 2) and not pads[0].any() and not pads[3].any() and (pads >= 0).all() and same_quant


def _same_pads(conv, height, width):
    """(top, bottom, left, right) TFLite's SAME padding gives ``conv`` on a ``height x width`` input,
    or None when SAME would produce another output size than the convolution has."""
    out = conv.outputs[0]
    (kh, kw), (dh, dw) = geo.kernel_hw(conv), geo.dilation_hw(conv)
    pads = []
    for size, out_size, k, d, s in ((height, out.shape[1], kh, dh, conv.options.strideH),
                                    (width, out.shape[2], kw, dw, conv.options.strideW)):
        if -(-size // s) != out_size:
            return None
        total = geo.same_pad_total(size, out_size, s, (k - 1) * d + 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def fold_pads(graph):
    """Fold every foldable PAD of ``graph`` into its one reader (in place); returns how many were folded."""
    readers = graph.consumers()
    folded = []
    for op in graph.ops:
        if not _zero_point_pad(op) or op.outputs[0] in graph.outputs:
            continue
        (conv, *others) = readers.get(op.outputs[0], [None])
        if others or conv is None or conv.opcode not in _CONVOLUTIONS or conv.options.padding != geo.VALID:
            continue
        if (conv.options.strideH, conv.options.strideW) != (1, 1):
            continue
        if conv.inputs[0] is not op.outputs[0]:
            continue
        x = op.inputs[0]
        pads = geo.pad_amounts(op)
        if _same_pads(conv, x.shape[1], x.shape[2]) != (pads[1, 0], pads[1, 1], pads[2, 0], pads[2, 1]):
            continue
        conv.inputs[0] = x
        conv.options.padding = geo.SAME
        folded.append(op)
    graph.ops = [op for op in graph.ops if all(op is not f for f in folded)]
    graph.prune_tensors()
    return len(folded)
