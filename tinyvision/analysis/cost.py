"""Compute and weight cost per operator: MACs, parameters and flash bytes.

MACs count multiply-accumulates of one inference (batch included):

* CONV_2D:            output elements x kernel_h x kernel_w x filter input channels
* DEPTHWISE_CONV_2D:  output elements x kernel_h x kernel_w
* TRANSPOSE_CONV:     input elements x kernel_h x kernel_w x output channels
* FULLY_CONNECTED:    output elements x input features (filter columns)
* BATCH_MATMUL:       output elements x the contracted dimension
* AVERAGE/MAX_POOL_2D, L2_POOL_2D: output elements x filter_h x filter_w (one op per window element)
* MEAN, SUM, REDUCE_*: input elements
* element-wise arithmetic (ADD, SUB, MUL, SQUARED_DIFFERENCE, ...): output elements

Data movement (RESHAPE, CONCATENATION, PAD, QUANTIZE...) counts 0.
Parameters are the elements of an op's weight-like constant inputs (quantized or
floating point: weights, biases, constant operands), not its plain integer
arguments (axes, shapes, paddings); flash bytes are the bytes of all its constant
inputs. A constant shared by several ops is counted for each op, and once in
the totals. The .tflite file itself (its length) is what the model takes in flash.
"""
import dataclasses

import numpy as np

from tinyvision.analysis.memory import as_model

_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "ADD_N",
    "LOGISTIC", "TANH", "SOFTMAX", "LOG_SOFTMAX", "HARD_SWISH", "PRELU", "LEAKY_RELU",
}
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}
_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}


@dataclasses.dataclass(frozen=True)
class OpCost:
    """Cost of one op of the main graph; shapes are those of ``output``."""

    index: int
    opcode: str
    output: str
    output_shape: tuple
    macs: int
    params: int
    flash_bytes: int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Per-op costs and totals (constants shared between ops counted once)."""

    ops: list
    macs: int
    params: int
    weight_bytes: int


def op_macs(op):
    """Multiply-accumulates of one op (see the module docstring for the convention)."""
    out = op.outputs[0] if op.outputs else None
    out_elems = out.size if out is not None else 0
    code = op.opcode
    if code == "CONV_2D":
        _, kh, kw, cin = op.inputs[1].shape
        return out_elems * kh * kw * cin
    if code == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = op.inputs[1].shape
        return out_elems * kh * kw
    if code == "TRANSPOSE_CONV":
        cout, kh, kw, _ = op.inputs[1].shape
        return op.inputs[2].size * kh * kw * cout
    if code == "FULLY_CONNECTED":
        return out_elems * op.inputs[1].shape[-1]
    if code == "BATCH_MATMUL":
        a = op.inputs[0].shape
        adj_x = bool(getattr(op.options, "adjX", False))
        return out_elems * (a[-2] if adj_x else a[-1])
    if code in _POOLS:
        return out_elems * op.options.filterHeight * op.options.filterWidth
    if code in _REDUCTIONS:
        return op.inputs[0].size
    if code in _ELEMENTWISE:
        return out_elems
    return 0


def model_cost(model, name="model"):
    """``ModelCost`` of the main graph of ``model`` (.tflite bytes or ``converters.ir.Model``)."""
    model = as_model(model, name)
    ops, seen = [], {}
    for index, op in enumerate(model.main.ops):
        consts = [t for t in op.inputs if t is not None and t.is_constant]
        for t in consts:
            seen[id(t)] = t
        out = op.outputs[0] if op.outputs else None
        ops.append(
            OpCost(
                index=index,
                opcode=op.opcode,
                output=out.name if out is not None else "",
                output_shape=tuple(out.shape) if out is not None else (),
                macs=int(op_macs(op)),
                params=int(sum(t.size for t in consts if _is_weight(t))),
                flash_bytes=int(sum(t.nbytes for t in consts)),
            )
        )
    return ModelCost(
        ops=ops,
        macs=sum(o.macs for o in ops),
        params=int(sum(t.size for t in seen.values() if _is_weight(t))),
        weight_bytes=int(sum(np.asarray(t.data).nbytes for t in seen.values())),
    )


def _is_weight(tensor):
    """Weights, biases and constant operands; not integer arguments such as axes or shapes."""
    return tensor.quantization is not None or np.issubdtype(np.dtype(tensor.dtype), np.floating)
