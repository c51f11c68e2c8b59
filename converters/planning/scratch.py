"""Kernel scratch buffers TFLM requests at Prepare time (planned online, in the arena head).

Scratch sizes depend on the kernels compiled in: the host ``tflite-micro`` pip package runs
TFLM's reference kernels, the Nano 33 BLE runs CMSIS-NN ones (whose convolutions, depthwise
convolutions and average pools request buffers of their own). ``reference_scratch`` gives
the requests of the reference kernels (tflite-micro main, kernels/reduce_common.cc);
pass the target's requests to ``plan_graph(scratch=...)``.
"""
import numpy as np

from tinyvision.errors import TinyVisionError

_QUANTIZED_SUMS = (np.dtype(np.int8), np.dtype(np.int16))
# Reference kernels that request scratch we do not model (int8 CNNs do not use them).
_UNMODELLED = frozenset(
    {"ADD_N", "MIRROR_PAD", "TRANSPOSE_CONV", "SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "TFLite_Detection_PostProcess"}
)


def reference_scratch(graph, name="graph"):
    """{op index: [bytes, ...]} scratch requests of TFLM's reference kernels, in request order.

    MEAN / SUM: an int32 accumulator per output element (int8 / int16 input only), then
    one int per input dimension and one per reduced axis; REDUCE_MAX / REDUCE_MIN: the
    last two. Raises TinyVisionError for ops whose requests are not modelled here.
    """
    requests = {}
    for i, op in enumerate(graph.ops):
        if op.opcode in _UNMODELLED:
            raise TinyVisionError(f"{name}: scratch buffers of {op.opcode} (op {i}) are not modelled")
        if op.opcode not in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
            continue
        data, axis, out = op.inputs[0], op.inputs[1], op.outputs[0]
        sizes = []
        if op.opcode in ("MEAN", "SUM") and np.dtype(data.dtype) in _QUANTIZED_SUMS:
            sizes.append(4 * out.size)
        sizes += [4 * len(data.shape), 4 * axis.size]
        requests[i] = sizes
    return requests
