"""Global-average MEANs that change quantization, rewritten as DEPTHWISE_CONV_2Ds the board computes as the host.

The Arduino TFLM libraries (older TFLM) rescale an int8 MEAN whose output quantization differs
from its input's through float (``reference/reduce.h``), so it can differ by 1 LSB from tflite-micro,
the reference (``converters.export.board_kernels``). tflite-micro computes, for ``n`` reduced values::

    M, s = QuantizeMultiplier(s_in / s_out);  k = min(floor(log2 n), 32, 31 + s)
    out  = MultiplyByQuantizedMultiplier(sum(x - zp_in), (M << k) // n, s - k) + zp_out     (clamped to int8)

A DEPTHWISE_CONV_2D with an H x W kernel over the whole H x W input (VALID, stride 1), every weight
q with zero point 0, zero bias and one weight scale ``w`` for every channel computes::

    out  = MultiplyByQuantizedMultiplier(q * sum(x - zp_in), QuantizeMultiplier(s_in * w / s_out)) + zp_out

with the same integer arithmetic on tflite-micro and on the Arduino libraries' CMSIS-NN kernel. The
pass picks the smallest q and the float32 ``w`` nearest to the MEAN's multiplier / q whose outputs
equal the MEAN's for EVERY sum the int8 input can produce (checked exhaustively here, in numpy, with
TFLite's integer arithmetic); a MEAN for which none qualifies is left as it is (analyze reports it).
When n is a power of two, q = 1 and ``w = 1 / n`` reproduce the multiplier exactly.

Cost: the weights (H * W * C bytes of flash) and, on TFLM, per-channel multipliers and shifts
(8 * C bytes of persistent arena) for the MEAN's 4 * C bytes of int32 accumulators.
"""
import math

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from converters.ir.graph import Model, Op, Quantization, Tensor

SEARCH_ULPS = 16  # float32 neighbours of the nearest weight scale tried on each side, for each weight value
MAX_WEIGHT = 127
DEPTHWISE_INT8_VERSION = 3  # TFLite op_version.cc: DEPTHWISE_CONV_2D with int8 per-channel weights


def quantize_multiplier(real):
    """TFLite's QuantizeMultiplier (quantization_util.cc): (int32 significand, shift) of a positive double."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))  # TfLiteRound: half away from zero
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier (double rounding) on an int64 array of int32 values."""
    x = np.asarray(x, np.int64) * (1 << max(shift, 0))
    right = max(-shift, 0)
    product = x * np.int64(multiplier)
    nudge = np.where(product >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    total = product + nudge
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C division truncates toward zero
    mask = np.int64((1 << right) - 1)
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def mean_multiplier(s_in, s_out, n):
    """tflite-micro's (multiplier, shift) of an int8 MEAN over n values (reference/reduce.h QuantizedMeanOrSum)."""
    m, s = quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    k = min(n.bit_length() - 1, 32, 31 + s)
    return (m << k) // n, s - k


def _outputs(sums, multiplier, shift, zp_out):
    return np.clip(multiply_by_quantized_multiplier(sums, multiplier, shift) + zp_out, -128, 127)


def exact_weights(s_in, zp_in, s_out, zp_out, n):
    """(int8 weight q, float32 weight scale w) of a DEPTHWISE_CONV_2D equal to the MEAN on every reachable sum, or
    None. Tries q = 1, 2, ... with the float32 scales nearest to the MEAN's multiplier / q (a larger q gives
    finer steps of the effective multiplier)."""
    sums = np.arange(n * (-128 - zp_in), n * (127 - zp_in) + 1, dtype=np.int64)
    s_in, s_out = float(np.float32(s_in)), float(np.float32(s_out))
    m, shift = mean_multiplier(s_in, s_out, n)
    want = _outputs(sums, m, shift, zp_out)
    for q in range(1, MAX_WEIGHT + 1):
        nearest = np.float32(m * 2.0 ** (shift - 31) * s_out / s_in / q)
        up = down = nearest
        candidates = [nearest]
        for _ in range(SEARCH_ULPS):
            up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(0))
            candidates += [up, down]
        for w in candidates:
            got = _outputs(sums * q, *quantize_multiplier(s_in * float(w) / s_out), zp_out)
            if w > 0 and np.array_equal(got, want):
                return q, w
    return None


def _global_mean(op):
    """(H, W, C) when ``op`` is an int8 MEAN over axes 1 and 2 of an NHWC tensor that changes quantization."""
    if op.opcode != "MEAN" or len(op.inputs) != 2 or op.inputs[1] is None or op.inputs[1].data is None:
        return None
    x, y = op.inputs[0], op.outputs[0]
    if np.dtype(x.dtype) != np.int8 or len(x.shape) != 4 or x.shape[0] != 1 or x.quantization is None:
        return None
    if y.quantization is None or x.quantization.per_channel or y.quantization.per_channel:
        return None
    axes = sorted(int(a) % 4 for a in np.asarray(op.inputs[1].data).reshape(-1))
    if axes != [1, 2] or y.size != x.shape[3]:
        return None
    same = (float(x.quantization.scale[0]) == float(y.quantization.scale[0])
            and int(x.quantization.zero_point[0]) == int(y.quantization.zero_point[0]))
    return None if same else tuple(int(d) for d in x.shape[1:])


def _depthwise(op, shape, q, w):
    """DEPTHWISE_CONV_2D (+ RESHAPE when the MEAN drops the reduced axes) computing ``op`` exactly."""
    H, W, C = shape
    x, y = op.inputs[0], op.outputs[0]
    name = y.name
    weights = Tensor(f"{name}/board_mean_weights", (1, H, W, C), np.int8, np.full((1, H, W, C), q, np.int8),
                     Quantization(np.full(C, w, np.float32), np.zeros(C, np.int64), axis=3))
    bias = Tensor(f"{name}/board_mean_bias", (C,), np.int32, np.zeros(C, np.int32),
                  Quantization((np.float32(x.quantization.scale[0]) * np.full(C, w, np.float32)).astype(np.float32),
                               np.zeros(C, np.int64), axis=0))
    options = schema.DepthwiseConv2DOptionsT()
    options.padding = schema.Padding.VALID
    options.strideW = options.strideH = 1
    options.depthMultiplier = 1
    options.dilationWFactor = options.dilationHFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    if tuple(y.shape) == (1, 1, 1, C):
        return [Op("DEPTHWISE_CONV_2D", [x, weights, bias], [y], options, version=DEPTHWISE_INT8_VERSION)]
    pooled = Tensor(f"{name}/board_mean_4d", (1, 1, 1, C), np.int8, quantization=y.quantization)
    shape_tensor = Tensor(f"{name}/board_mean_shape", (len(y.shape),), np.int32, np.asarray(y.shape, np.int32))
    reshape = schema.ReshapeOptionsT()
    reshape.newShape = [int(d) for d in y.shape]
    return [Op("DEPTHWISE_CONV_2D", [x, weights, bias], [pooled], options, version=DEPTHWISE_INT8_VERSION),
            Op("RESHAPE", [pooled, shape_tensor], [y], reshape)]


def board_exact_means(model):
    """Rewrite every rescaling global-average int8 MEAN of ``model`` (a ``Model``, in place); the count rewritten."""
    rewritten, found = 0, {}
    for graph in model.subgraphs:
        ops = []
        for op in graph.ops:
            shape = _global_mean(op)
            x, y = op.inputs[0], op.outputs[0]
            key = None if shape is None else (
                float(x.quantization.scale[0]), int(x.quantization.zero_point[0]),
                float(y.quantization.scale[0]), int(y.quantization.zero_point[0]), shape[0] * shape[1])
            if key is not None and key not in found:  # channel-split tails repeat one MEAN's parameters
                found[key] = exact_weights(*key)
            if key is None or found[key] is None:
                ops.append(op)
                continue
            ops += _depthwise(op, shape, *found[key])
            rewritten += 1
        graph.ops = ops
    return rewritten


def board_exact_means_tflite(model_bytes, name="model.tflite"):
    """(.tflite bytes with its rescaling global MEANs rewritten, count); the same bytes when there is none."""
    model = Model.from_bytes(model_bytes, name)
    count = board_exact_means(model)
    return (model.to_bytes() if count else bytes(model_bytes)), count
