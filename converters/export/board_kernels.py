"""Where the board's TFLM library computes differently from the host's tflite-micro (the reference).

The Arduino TFLM libraries (Chirale_TensorFlowLite 2.0.0, Arduino_TensorFlowLite 2.4.0-ALPHA) are
older TFLM: their int8/int16 MEAN (and SUM) that changes quantization (input and output scale or
zero point differ) rescales through float (``reference/reduce.h`` QuantizedMeanOrSum: ``round(float(sum)
/ n * (s_in / s_out) - zp_in * s_in / s_out) + zp_out`` in float32), where tflite-micro's kernel uses
a fixed-point multiplier. Both round nearly the same real value, so an output value can differ by
1 LSB, never more. An int8 MEAN that keeps the quantization divides the integer sum by the count on
both, but the older library truncates toward zero where tflite-micro rounds to nearest: 1 LSB again
(seen on TinyEngine's VWW export, whose NCHW head averages one axis at a time). A SUM that keeps it
is exact; every other operator the bundles use computes identically (checked on the emulated board
by tests/test_board_runtime.py).
"""
import dataclasses

import numpy as np

RESCALING_REDUCE_OPS = ("MEAN", "SUM")
RESCALE_BOUND_LSB = 1


@dataclasses.dataclass(frozen=True)
class BoardDifference:
    """An operator whose output can differ on the board: ``model`` file, ``op`` index, ``opcode``, the output
    ``tensor`` name, the most it can differ by (``bound_lsb``) and ``why``."""

    model: str
    op: int
    opcode: str
    tensor: str
    bound_lsb: int
    why: str

    def line(self):
        return (f"{self.model}: {self.opcode} op {self.op} ({self.tensor}) can differ by up to {self.bound_lsb} "
                f"LSB on the board: {self.why}")


def _quant(tensor):
    q = tensor.quantization
    if q is None:
        return None
    return tuple(np.asarray(q.scale, np.float32).tolist()), tuple(np.asarray(q.zero_point).tolist())


def board_differences(model_bytes, name="model.tflite"):
    """The ``BoardDifference`` of every operator of a .tflite the Arduino libraries compute differently."""
    from converters.ir import Model

    found = []
    for graph in Model.from_bytes(model_bytes, name).subgraphs:
        for i, op in enumerate(graph.ops):
            x, y = op.inputs[0], op.outputs[0]
            if op.opcode not in RESCALING_REDUCE_OPS or np.dtype(x.dtype) not in (np.int8, np.int16):
                continue
            if _quant(x) != _quant(y):
                found.append(BoardDifference(
                    name, i, op.opcode, y.name, RESCALE_BOUND_LSB,
                    "the Arduino TFLM libraries rescale a quantization-changing "
                    f"{op.opcode} through float (reference/reduce.h), tflite-micro in fixed point"))
            elif op.opcode == "MEAN":
                found.append(BoardDifference(
                    name, i, op.opcode, y.name, RESCALE_BOUND_LSB,
                    "the Arduino TFLM libraries divide its integer sum truncating toward zero "
                    "(reference/reduce.h), tflite-micro rounds to nearest"))
    return found


def bundle_board_differences(bundle):
    """``board_differences`` of every model of a bundle, in plan order."""
    return [d for m in bundle.models for d in board_differences(m.data, m.file)]


def difference_lines(differences):
    """One line per kind of difference (operator, bound and cause): a single one as ``BoardDifference.line``,
    several (a pooled convolution's channel groups each have their pool) counted, with the first and last file."""
    kinds = {}
    for d in differences:
        kinds.setdefault((d.opcode, d.bound_lsb, d.why), []).append(d)
    return [found[0].line() if len(found) == 1 else
            f"{opcode} in {len(found)} operators of {len({d.model for d in found})} models ({found[0].model} .. "
            f"{found[-1].model}) can differ by up to {bound} LSB on the board: {why}"
            for (opcode, bound, why), found in kinds.items()]
