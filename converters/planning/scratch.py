"""Kernel scratch buffers TFLM requests at Prepare time (planned online, in the arena head).

Scratch sizes depend on the kernels compiled in; pass the target's requests to
``plan_graph(scratch=...)`` (``deployment_scratch`` for a plan that serves both targets).

* ``reference_scratch``: the host ``tflite-micro`` pip package, TFLM's reference
  kernels of tflite-micro main (kernels/reduce_common.cc, transpose_conv.cc).
* ``cmsis_nn_scratch``: the Nano 33 BLE, i.e. the Arduino libraries Chirale_TensorFlowLite
  2.0.0 and Arduino_TensorFlowLite built for Cortex-M4 with the DSP extension
  (ARM_MATH_DSP from __ARM_FEATURE_DSP, no ARM_MATH_MVEI). CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED, AVERAGE_POOL_2D / MAX_POOL_2D, ADD, MUL, SOFTMAX (and SVDF) run the
  kernels of micro/kernels/cmsis_nn/*.cpp, whose Prepare asks CMSIS-NN's
  ``*_get_buffer_size`` (third_party/cmsis_nn/Source/**); the two libraries ship the same
  CMSIS-NN sources. Other ops run those libraries' reference kernels, which are older than
  tflite-micro main's: their MEAN / SUM (reduce_common.cpp, PrepareMeanOrSumHelper)
  request only the accumulator.

Both libraries' kernels also request a filter-sized buffer (first) for packed INT4
filters of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED; ``converters.ir`` does not
import INT4 tensors yet, so ``_unpacked_int4`` only fires for a tensor whose dtype is
``ml_dtypes.int4``.
"""
import numpy as np

from converters.planning.overlap import SAME
from tinyvision.errors import TinyVisionError

_QUANTIZED_SUMS = (np.dtype(np.int8), np.dtype(np.int16))
# Reference kernels that request scratch the offline planner does not take on (int8 CNNs do not use them).
_UNMODELLED = frozenset(
    {"ADD_N", "MIRROR_PAD", "TRANSPOSE_CONV", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "TFLite_Detection_PostProcess"}
)
KERNELS = ("reference", "cmsis_nn")


def op_scratch(op, kernels="reference"):
    """Bytes of each scratch buffer ``op``'s kernel requests in Prepare, in request order.

    kernels: "reference" (tflite-micro main) or "cmsis_nn" (the Arduino libraries on Cortex-M4).

    Reference kernels: MEAN / SUM: an int32 accumulator per output element (int8 / int16
    input only), then one int per input dimension and one per reduced axis; REDUCE_MAX /
    REDUCE_MIN: the last two; TRANSPOSE_CONV: an int32 (int8 input) or int64 (int16 input)
    accumulator per output element. Other ops of a vision model request none.
    CMSIS-NN: see ``_CMSIS_NN`` and the functions it names.
    """
    if kernels == "cmsis_nn":
        family = _CMSIS_NN.get(op.opcode)
        if family is not None:
            return family(op)
    elif kernels != "reference":
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    inputs = op.inputs
    if op.opcode in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        data, axis = inputs[0], inputs[1]
        sizes = []
        if op.opcode in ("MEAN", "SUM") and np.dtype(data.dtype) in _QUANTIZED_SUMS:
            sizes.append(4 * op.outputs[0].size)
        return sizes + [4 * len(data.shape), 4 * axis.size]
    if op.opcode == "TRANSPOSE_CONV":
        dtype = np.dtype(inputs[2].dtype)
        if dtype == np.int8:
            return [4 * op.outputs[0].size]
        if dtype == np.int16:
            return [8 * op.outputs[0].size]
    return []


def reference_scratch(graph, name="graph"):
    """{op index: [bytes, ...]} scratch requests of TFLM's reference kernels (``op_scratch``) for ops that make any.

    Raises TinyVisionError for ops whose requests the offline planner does not model.
    """
    return _graph_scratch(graph, name, "reference")


def cmsis_nn_scratch(graph, name="graph"):
    """{op index: [bytes, ...]} scratch requests on the Nano 33 BLE (CMSIS-NN kernels where the
    Arduino libraries have them, their reference kernels elsewhere) for ops that make any.

    Raises TinyVisionError for ops whose requests the offline planner does not model.
    """
    return _graph_scratch(graph, name, "cmsis_nn")


def deployment_scratch(graph, name="graph"):
    """{op index: [bytes, ...]} requests one offline plan leaves room for, so that it is right both on the
    host (``reference_scratch``) and on the Nano 33 BLE (``cmsis_nn_scratch``).

    Per op: the one non-empty list, or the longer where one is the other's prefix (MEAN / SUM: the
    board's accumulator, then the host's index buffers). Each target places only its own requests;
    ``converters.planning.target_scratch`` checks where they land.
    Raises TinyVisionError for an op whose two kernels request unrelated buffers.
    """
    host, board = reference_scratch(graph, name), cmsis_nn_scratch(graph, name)
    merged = {}
    for op in sorted(set(host) | set(board)):
        a, b = host.get(op, []), board.get(op, [])
        longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
        if longer[:len(shorter)] != shorter:
            raise TinyVisionError(f"{name}: op {op} ({graph.ops[op].opcode}) requests scratch {a} on the host "
                                  f"and {b} on the board: one offline plan cannot serve both")
        merged[op] = list(longer)
    return merged


def _graph_scratch(graph, name, kernels):
    requests = {}
    for i, op in enumerate(graph.ops):
        if op.opcode in _UNMODELLED:
            raise TinyVisionError(f"{name}: scratch buffers of {op.opcode} (op {i}) are not modelled")
        sizes = op_scratch(op, kernels)
        if sizes:
            requests[i] = sizes
    return requests


def tflm_padding(padding, stride, dilation, in_size, filter_size):
    """Leading padding TFLM gives one spatial axis (kernels/padding.h, ComputePaddingHeightWidth):
    the output size from the padding type (ComputeOutSize), then half the total padding, rounded down."""
    effective = (filter_size - 1) * dilation + 1
    if padding == SAME:
        out_size = (in_size + stride - 1) // stride
    else:
        out_size = (in_size + stride - effective) // stride
    return max((out_size - 1) * stride + effective - in_size, 0) // 2


def _unpacked_int4(weights):
    """cmsis_nn/{conv,depthwise_conv,fully_connected}.cpp Prepare: an INT4 filter is unpacked into
    a buffer of one byte per weight, requested before the kernel's own buffer."""
    return [weights.size] if np.dtype(weights.dtype).name == "int4" else []


def _cmsis_conv(op):
    """cmsis_nn/conv.cpp Prepare: arm_convolve_wrapper_s8_get_buffer_size (int8 input) or
    arm_convolve_wrapper_s16_get_buffer_size (int16 input); float input requests nothing."""
    x, w = op.inputs[0], op.inputs[1]
    o = op.options
    _, in_h, in_w, in_c = x.shape
    _, f_h, f_w, _ = w.shape
    out_w = op.outputs[0].shape[2]
    pad_h = tflm_padding(o.padding, o.strideH, o.dilationHFactor, in_h, f_h)
    pad_w = tflm_padding(o.padding, o.strideW, o.dilationWFactor, in_w, f_w)
    undilated = o.dilationHFactor == 1 and o.dilationWFactor == 1
    # arm_convolve_s8_get_buffer_size and arm_convolve_fast_s16_get_buffer_size without MVE:
    # im2col of two output pixels as int16.
    im2col = 2 * in_c * f_w * f_h * 2
    dtype = np.dtype(x.dtype)
    if dtype == np.int8:
        if pad_h == pad_w == 0 and o.strideH == o.strideW == 1 and f_h == f_w == 1 and undilated:
            size = 0  # arm_convolve_1x1_s8_fast_get_buffer_size
        elif in_h == 1 and out_w % 4 == 0 and o.dilationWFactor == 1 and f_h == 1:
            size = im2col  # arm_convolve_1_x_n_s8_get_buffer_size: arm_convolve_s8's without MVE
        else:
            size = im2col  # arm_convolve_s8_get_buffer_size
    elif dtype == np.int16:
        # with ARM_MATH_DSP: arm_convolve_fast_s16 for small undilated kernels, else arm_convolve_s16 (0)
        size = im2col if f_w * f_h * in_c < 512 and undilated else 0
    else:
        size = 0
    return _unpacked_int4(w) + ([size] if size > 0 else [])


def _cmsis_depthwise(op):
    """cmsis_nn/depthwise_conv.cpp Prepare: arm_depthwise_conv_wrapper_s8_get_buffer_size, int8 input only.

    The wrapper asks for arm_depthwise_conv_s8_opt's im2col (input channels x kernel, int16)
    whenever the channel multiplier is 1 (input channels == output channels), batch 1 and no
    dilation, also when it will run arm_depthwise_conv_3x3_s8, which uses none; with a channel
    multiplier or dilation (arm_depthwise_conv_s8) it asks for nothing. Padding plays no part.
    int16 inputs request nothing in this Prepare.
    """
    x, w = op.inputs[0], op.inputs[1]
    o = op.options
    n, _, _, in_c = x.shape
    _, f_h, f_w, out_c = w.shape
    size = 0
    if np.dtype(x.dtype) == np.int8 and in_c == out_c and n == 1 and o.dilationHFactor == o.dilationWFactor == 1:
        size = in_c * f_w * f_h * 2
    return _unpacked_int4(w) + ([size] if size > 0 else [])


def _cmsis_fully_connected(op):
    """cmsis_nn/fully_connected.cpp Prepare: arm_fully_connected_s8/_s16_get_buffer_size, or for int8
    outputs of rank > 2 whose accumulation depth is a multiple of 4 (run as a 1x1 convolution)
    arm_convolve_1x1_s8_fast_get_buffer_size: all three are 0, so only an INT4 filter asks for a buffer."""
    return _unpacked_int4(op.inputs[1])


def _cmsis_average_pool(op):
    """cmsis_nn/pooling.cpp AveragePrepare: arm_avgpool_s8_get_buffer_size with ARM_MATH_DSP, an int32
    sum per channel; MAX_POOL_2D (MaxPrepare) requests nothing.

    int16: Arduino_TensorFlowLite requests arm_avgpool_s16_get_buffer_size (the same int32 per
    channel); Chirale_TensorFlowLite requests nothing, but its Eval then rejects int16 average
    pools, so a model that runs there gets the int32 sums too.
    """
    x = op.inputs[0]
    if np.dtype(x.dtype) in _QUANTIZED_SUMS:
        return [4 * x.shape[3]]
    return []


def _arduino_mean_or_sum(op):
    """The Arduino libraries' reduce_common.cpp PrepareMeanOrSumHelper (no CMSIS-NN kernel): only the int32
    accumulator per output element (int8 / int16 input); tflite-micro main also asks for index buffers."""
    if np.dtype(op.inputs[0].dtype) in _QUANTIZED_SUMS:
        return [4 * op.outputs[0].size]
    return []


# CMSIS-NN kernels (and reference kernels that differ from tflite-micro main) of the Arduino libraries.
# ADD, MUL, SOFTMAX and MAX_POOL_2D have CMSIS-NN kernels that request nothing, as the reference ones.
_CMSIS_NN = {
    "CONV_2D": _cmsis_conv,
    "DEPTHWISE_CONV_2D": _cmsis_depthwise,
    "FULLY_CONNECTED": _cmsis_fully_connected,
    "AVERAGE_POOL_2D": _cmsis_average_pool,
    "MEAN": _arduino_mean_or_sum,
    "SUM": _arduino_mean_or_sum,
}
