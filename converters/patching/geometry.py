"""Receptive-field geometry of the ops a patch stage may contain.

Every supported op maps an output interval along H or W to the input interval it
reads, through one ``AxisMap``: output rows ``[lo, hi)`` need input rows
``[lo * stride - offset, (hi - 1) * stride - offset + kernel)``. Rows of that
interval outside ``[0, D)`` are padding the op creates itself (SAME padding of a
convolution or pool, the explicit pads of PAD); the rest must be computed.

* windowed ops (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D):
  kernel = dilated kernel, offset = the SAME padding before (0 for VALID);
* PAD / PADV2: kernel 1, stride 1, offset = the pad before;
* element-wise ops: the identity (kernel 1, stride 1, offset 0).
"""
import dataclasses

import numpy as np

SAME, VALID = 0, 1

WINDOWED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"})
PADS = frozenset({"PAD", "PADV2"})
# Ops applied per element whose activation inputs all have the output's shape.
UNARY = frozenset({
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU",
    "PRELU", "QUANTIZE", "ELU", "ABS", "NEG",
})
BINARY = frozenset({"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE"})
SUPPORTED = WINDOWED | PADS | UNARY | BINARY


@dataclasses.dataclass(frozen=True)
class AxisMap:
    """Output interval -> the input interval it reads (may stick out of the input: padding)."""

    kernel: int = 1
    stride: int = 1
    offset: int = 0

    def need(self, lo, hi):
        return lo * self.stride - self.offset, (hi - 1) * self.stride - self.offset + self.kernel

    def out_count(self, length):
        """Outputs of a VALID window over ``length`` rows."""
        return (length - self.kernel) // self.stride + 1


IDENTITY = AxisMap()


def kernel_hw(op):
    """(kh, kw) of a windowed op, not dilated."""
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return op.inputs[1].shape[1], op.inputs[1].shape[2]
    return op.options.filterHeight, op.options.filterWidth


def dilation_hw(op):
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return max(1, op.options.dilationHFactor), max(1, op.options.dilationWFactor)
    return 1, 1


def same_pad_before(in_size, out_size, stride, eff_kernel):
    """TFLite's SAME padding before an axis (``ComputePaddingHeightWidth``)."""
    return max((out_size - 1) * stride + eff_kernel - in_size, 0) // 2


def same_pad_total(in_size, out_size, stride, eff_kernel):
    return max((out_size - 1) * stride + eff_kernel - in_size, 0)


def pad_amounts(op):
    """The constant paddings of a PAD/PADV2 op as an int (4, 2) array."""
    return np.asarray(op.inputs[1].data, dtype=np.int64).reshape(-1, 2)


def axis_maps(op):
    """(map along H, map along W) of a supported op."""
    if op.opcode in WINDOWED:
        x, out = op.inputs[0], op.outputs[0]
        maps = []
        for axis, k, d, s in zip((1, 2), kernel_hw(op), dilation_hw(op), (op.options.strideH, op.options.strideW)):
            eff = (k - 1) * d + 1
            offset = same_pad_before(x.shape[axis], out.shape[axis], s, eff) if op.options.padding == SAME else 0
            maps.append(AxisMap(eff, s, offset))
        return tuple(maps)
    if op.opcode in PADS:
        pads = pad_amounts(op)
        return AxisMap(1, 1, int(pads[1, 0])), AxisMap(1, 1, int(pads[2, 0]))
    return IDENTITY, IDENTITY


def activation_slots(op):
    """Indices of ``op.inputs`` holding activations (the tensors a patch computes regions of)."""
    return [i for i, t in enumerate(op.inputs) if t is not None and not t.is_constant]


def _is_nhwc_int8(t):
    return len(t.shape) == 4 and t.shape[0] == 1 and np.dtype(t.dtype) == np.int8


def _spatially_constant(t):
    """A constant operand that broadcasts over H and W (shape (), (C,), (1, C), (1, 1, C), (1, 1, 1, C))."""
    shape = tuple(t.shape)
    return len(shape) <= 4 and all(d == 1 for d in shape[:-1])


def unsupported_reason(op):
    """Why ``op`` cannot be part of a patch stage, or None when it can."""
    code = op.opcode
    if code not in SUPPORTED:
        return f"{code} is not a spatially local op"
    if len(op.outputs) != 1 or not _is_nhwc_int8(op.outputs[0]):
        return f"{code} does not produce one int8 (1, H, W, C) tensor"
    out = op.outputs[0]
    slots = activation_slots(op)
    if not slots:
        return f"{code} has no activation input"
    for i in slots:
        if not _is_nhwc_int8(op.inputs[i]):
            return f"{code} reads a tensor that is not int8 (1, H, W, C): {op.inputs[i].name!r}"
    if code in WINDOWED:
        if slots != [0]:
            return f"{code} has non-constant weights"
        if code == "AVERAGE_POOL_2D" and op.options.padding == SAME:
            x = op.inputs[0]
            kh, kw = kernel_hw(op)
            pads = [same_pad_total(x.shape[a], out.shape[a], s, k)
                    for a, s, k in ((1, op.options.strideH, kh), (2, op.options.strideW, kw))]
            if any(pads):
                return ("AVERAGE_POOL_2D with SAME padding divides border windows by their in-image size, "
                        "which a patch cannot reproduce")
        return None
    if code in PADS:
        if slots != [0] or (code == "PADV2" and len(op.inputs) > 2 and op.inputs[2] is not None
                            and not op.inputs[2].is_constant):
            return f"{code} has non-constant paddings or pad value"
        pads = pad_amounts(op)
        if pads.shape != (4, 2) or pads[0].any():
            return f"{code} pads the batch dimension"
        if (pads < 0).any():
            return f"{code} has negative paddings"
        return None
    for i, t in enumerate(op.inputs):
        if t is None:
            continue
        if t.is_constant:
            if not _spatially_constant(t):
                return f"{code} has a constant operand {t.name!r} {t.shape} with a spatial extent"
        elif tuple(t.shape) != tuple(out.shape[:3]) + (t.shape[3],) or t.shape[3] != out.shape[3]:
            return f"{code} broadcasts activation {t.name!r} {t.shape} to {out.shape}"
    return None
