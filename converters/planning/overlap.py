"""Shifted in-place buffers: an op writing its output over its own dying input.

A depthwise convolution or a PAD reads its input and writes its output in raster
order (pixel by pixel, rows top to bottom, NHWC): TFLM's reference kernels
(``reference_integer_ops::DepthwisePerChannel``, ``reference_ops::PadImpl``) and
the CMSIS-NN depthwise kernels of the Arduino TFLM libraries (``arm_depthwise_conv_s8``,
``_s8_opt``, ``_3x3_s8``: one output pixel, all its channels, after the next) all do.
So the output may start ``shift`` bytes *below* the input and overlap it: every
byte written then lies below every input byte still to be read. This is the
in-place depthwise of TinyEngine, done with TFLM's unmodified kernels through
the offline plan, and it saves most of the output's bytes.

``required_shift`` gives the least such shift, assuming nothing about the order
inside one output pixel (its writes may come before its own reads). Convolutions
are left out: CMSIS-NN's 1x1 kernels run output channels in the outer loop and
re-read every input pixel for each.
"""
import numpy as np

SAME = 0  # tflite::Padding
RASTER_OPS = frozenset({"DEPTHWISE_CONV_2D", "PAD", "PADV2"})


def _nhwc_int8(t):
    return t is not None and len(t.shape) == 4 and t.shape[0] == 1 and np.dtype(t.dtype) == np.int8


def required_shift(op):
    """Least bytes the input must sit above the output for ``op`` to run over it; None if ``op`` can't."""
    if op.opcode not in RASTER_OPS or len(op.outputs) != 1:
        return None
    x, y = op.inputs[0], op.outputs[0]
    if not (_nhwc_int8(x) and _nhwc_int8(y)) or x.is_constant:
        return None
    if op.opcode == "DEPTHWISE_CONV_2D":
        return _depthwise_shift(op, x, y)
    pads = op.inputs[1]
    if pads is None or not pads.is_constant:
        return None
    return _pad_shift(np.asarray(pads.data, dtype=np.int64).reshape(-1, 2), x.shape, y.shape)


def _pad_shift(pads, in_shape, out_shape):
    """Pad elements written before the last input element (each element is one byte, read then written)."""
    last = [int(p) + d - 1 for p, d in zip(pads[:, 0], in_shape)]
    position = int(np.ravel_multi_index(last, out_shape))
    return max(position + 1 - int(np.prod(in_shape)), 0)


def _depthwise_shift(op, x, y):
    _, H, W, Ci = x.shape
    _, Ho, Wo, Co = y.shape
    o = op.options
    kh, kw = op.inputs[1].shape[1:3]
    top = left = 0
    if o.padding == SAME:
        dh, dw = max(1, o.dilationHFactor), max(1, o.dilationWFactor)
        top = max((Ho - 1) * o.strideH + (kh - 1) * dh + 1 - H, 0) // 2
        left = max((Wo - 1) * o.strideW + (kw - 1) * dw + 1 - W, 0) // 2
    rows = np.clip(np.arange(Ho) * o.strideH - top, 0, H - 1)
    cols = np.clip(np.arange(Wo) * o.strideW - left, 0, W - 1)
    # lowest input byte each output pixel reads, then the lowest any pixel from there on reads
    first_read = ((rows[:, None] * W + cols[None, :]) * Ci).reshape(-1)
    still_needed = np.minimum.accumulate(first_read[::-1])[::-1]
    write_end = (np.arange(Ho * Wo) + 1) * Co
    return max(int((write_end - still_needed).max()), 0)
