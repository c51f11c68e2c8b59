"""Kernel scratch buffers TFLM requests at Prepare time (planned online, in the arena head).

Scratch sizes depend on the kernels compiled in: the host ``tflite-micro`` pip package runs
TFLM's reference kernels, the Nano 33 BLE runs CMSIS-NN ones (whose convolutions, depthwise
convolutions and average pools request buffers of their own). ``op_scratch`` gives the
requests of one op's reference kernel (tflite-micro main, kernels/reduce_common.cc and
transpose_conv.cc), ``reference_scratch`` those of a graph; pass the target's requests
to ``plan_graph(scratch=...)``.
"""
import numpy as np

from tinyvision.errors import TinyVisionError

_QUANTIZED_SUMS = (np.dtype(np.int8), np.dtype(np.int16))
# Reference kernels that request scratch the offline planner does not take on (int8 CNNs do not use them).
_UNMODELLED = frozenset(
    {"ADD_N", "MIRROR_PAD", "TRANSPOSE_CONV", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "TFLite_Detection_PostProcess"}
)


def op_scratch(op):
    """Bytes of each scratch buffer TFLM's reference kernel for ``op`` requests, in request order.

    MEAN / SUM: an int32 accumulator per output element (int8 / int16 input only), then
    one int per input dimension and one per reduced axis; REDUCE_MAX / REDUCE_MIN: the
    last two; TRANSPOSE_CONV: an int32 (int8 input) or int64 (int16 input) accumulator
    per output element. Other ops of a vision model request none.
    """
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
    requests = {}
    for i, op in enumerate(graph.ops):
        if op.opcode in _UNMODELLED:
            raise TinyVisionError(f"{name}: scratch buffers of {op.opcode} (op {i}) are not modelled")
        sizes = op_scratch(op)
        if sizes:
            requests[i] = sizes
    return requests
