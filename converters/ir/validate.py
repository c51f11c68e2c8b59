"""The checks every .tflite passes on import, so no later pass meets an index, size or option it cannot use.

``check_flatbuffer`` runs on TensorFlow's parsed object tree (``schema_py_generated.ModelT``)
before the IR is built: every index (operator code, tensor, buffer, subgraph, metadata) in
range, every shape non-negative and small enough for a microcontroller, every constant's
buffer exactly the size of its tensor, quantization arrays consistent with their tensor,
and the operators this toolchain reads options or operands of carrying what it reads
(a stride of 0 would divide by zero in the patch geometry). ``check_graph`` then checks
the dataflow of each imported ``Graph``: every operator reads only graph inputs,
constants, variables or tensors an earlier operator wrote (no cycle, no self-loop),
each tensor has one writer, and the graph has outputs. Each failure is one
TinyVisionError naming the model, the place and the cause.
"""
import dataclasses
import math

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tinyvision.errors import TinyVisionError

# Far above the SRAM and flash of any microcontroller TFLM targets, and small enough that the host-side
# reference runs and analyses can allocate a tensor without exhausting the machine.
MAX_TENSOR_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class OperandContract:
    """What the converters and analyses read of one operator: its options class, how many inputs and
    outputs at least, the rank of the inputs they index into, and the options fields that must be >= 1."""

    options: type = None
    inputs: int = 1
    outputs: int = 1
    ranks: tuple = ()  # (input position, rank)
    positive: tuple = ()  # option fields that must be >= 1


_CONV_FIELDS = ("strideH", "strideW", "dilationHFactor", "dilationWFactor")
_POOL = OperandContract(schema.Pool2DOptionsT, 1, 1, ((0, 4),), ("strideH", "strideW", "filterHeight", "filterWidth"))
_REDUCER = OperandContract(schema.ReducerOptionsT, 2, 1)
CONTRACTS = {
    "CONV_2D": OperandContract(schema.Conv2DOptionsT, 2, 1, ((0, 4), (1, 4)), _CONV_FIELDS),
    "DEPTHWISE_CONV_2D": OperandContract(schema.DepthwiseConv2DOptionsT, 2, 1, ((0, 4), (1, 4)), _CONV_FIELDS),
    "TRANSPOSE_CONV": OperandContract(schema.TransposeConvOptionsT, 3, 1, ((1, 4),), ("strideH", "strideW")),
    "FULLY_CONNECTED": OperandContract(schema.FullyConnectedOptionsT, 2, 1, ((1, 2),)),
    "AVERAGE_POOL_2D": _POOL,
    "MAX_POOL_2D": _POOL,
    "MEAN": _REDUCER,
    "SUM": _REDUCER,
    "REDUCE_MAX": _REDUCER,
    "REDUCE_MIN": _REDUCER,
    "CONCATENATION": OperandContract(schema.ConcatenationOptionsT, 1, 1),
    "BATCH_MATMUL": OperandContract(None, 2, 1),
}


def check_flatbuffer(fb, name, opcode_name, dtypes):
    """Raise TinyVisionError unless the parsed ``ModelT`` ``fb`` is consistent (see the module docstring).

    opcode_name: function OperatorCodeT -> the opcode string the IR will use;
    dtypes: {schema TensorType: numpy type} of the types the IR supports.
    """
    def fail(message):
        raise TinyVisionError(f"{name}: {message}")

    buffers = fb.buffers or []
    opcodes = fb.operatorCodes or []
    subgraphs = fb.subgraphs or []
    if not subgraphs:
        fail("has no subgraph")
    for where, text in _texts(fb):
        try:
            text.decode("utf-8") if isinstance(text, bytes) else None
        except UnicodeDecodeError:
            fail(f"{where} is not UTF-8 text")
    for m in fb.metadata or []:
        if not 0 <= m.buffer < len(buffers):
            fail(f"metadata {_text(m.name)!r} points at buffer {m.buffer}, but there are {len(buffers)} buffers")
    for k, sg in enumerate(subgraphs):
        where = "" if k == 0 else f"subgraph {k}: "
        tensors = sg.tensors or []
        for i, t in enumerate(tensors):
            _check_tensor(t, f"{where}tensor {i} ({_text(t.name)!r})", buffers, dtypes, fail)
        for role, indices in (("input", sg.inputs), ("output", sg.outputs)):
            for i in _indices(indices):
                if not 0 <= i < len(tensors):
                    fail(f"{where}graph {role} is tensor {i}, but there are {len(tensors)} tensors")
        if k == 0 and not len(_indices(sg.outputs)):
            fail("the graph has no outputs")
        for j, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < len(opcodes):
                fail(f"{where}operator {j} uses operator code {op.opcodeIndex}, but there are {len(opcodes)}")
            _check_operator(op, opcode_name(opcodes[op.opcodeIndex]), tensors, f"{where}operator {j}", fail)
    for s in fb.signatureDefs or []:
        key = _text(s.signatureKey)
        if not 0 <= s.subgraphIndex < len(subgraphs):
            fail(f"signature {key!r} names subgraph {s.subgraphIndex}, but there are {len(subgraphs)}")
        count = len(subgraphs[s.subgraphIndex].tensors or [])
        for m in (s.inputs or []) + (s.outputs or []):
            if not 0 <= m.tensorIndex < count:
                fail(f"signature {key!r} maps {_text(m.name)!r} to tensor {m.tensorIndex}, but there are {count}")


def _check_tensor(t, where, buffers, dtypes, fail):
    if t.type not in dtypes:
        fail(f"{where} has an unsupported type ({t.type})")
    shape = [int(d) for d in _indices(t.shape)]
    if any(d < 0 for d in shape):
        fail(f"{where} has shape {shape} with a negative dimension")
    itemsize = np.dtype(dtypes[t.type]).itemsize
    nbytes = math.prod(shape) * itemsize
    if nbytes > MAX_TENSOR_BYTES:
        fail(f"{where} of shape {shape} takes {nbytes:,} B, more than the {MAX_TENSOR_BYTES:,} B any "
             "microcontroller could hold")
    if not 0 <= t.buffer < len(buffers):
        fail(f"{where} points at buffer {t.buffer}, but there are {len(buffers)} buffers")
    data = buffers[t.buffer].data if t.buffer else None
    if data is not None and len(data) and len(data) != nbytes:
        fail(f"{where} of shape {shape} needs {nbytes:,} B of data, its buffer {t.buffer} holds {len(data):,} B")
    q = t.quantization
    if q is None or q.scale is None or not len(q.scale):
        return
    scale = np.asarray(q.scale, dtype=np.float64)
    if not np.isfinite(scale).all():
        fail(f"{where} has a quantization scale that is not finite")
    if q.zeroPoint is not None and len(q.zeroPoint) not in (0, len(scale)):
        fail(f"{where} has {len(scale)} quantization scales but {len(q.zeroPoint)} zero points")
    if len(scale) > 1:
        # Converters leave a stale dimension on rank-1 biases (person_detect): TFLM reads their scales per element.
        axis = int(q.quantizedDimension) if 0 <= q.quantizedDimension < len(shape) else 0
        if len(shape) < 1 or shape[axis] != len(scale):
            fail(f"{where} of shape {shape} has {len(scale)} per-channel scales along dimension "
                 f"{q.quantizedDimension}")


def _check_operator(op, opcode, tensors, where, fail):
    where = f"{where} ({opcode})"
    for role, indices, optional in (("input", op.inputs, True), ("output", op.outputs, False)):
        for i in _indices(indices):
            if not (-1 if optional else 0) <= i < len(tensors):
                fail(f"{where} {role} is tensor {i}, but there are {len(tensors)} tensors")
    contract = CONTRACTS.get(opcode)
    if contract is None:
        return
    inputs, outputs = list(_indices(op.inputs)), list(_indices(op.outputs))
    if len(inputs) < contract.inputs or len(outputs) < contract.outputs:
        fail(f"{where} has {len(inputs)} inputs and {len(outputs)} outputs, needs at least {contract.inputs} "
             f"and {contract.outputs}")
    for position, index in enumerate(inputs[:contract.inputs]):
        if index < 0:
            fail(f"{where} input {position} is required but missing (tensor -1)")
    for position, rank in contract.ranks:
        index = inputs[position]
        if index < 0 or len(_indices(tensors[index].shape)) != rank:
            fail(f"{where} input {position} must be a rank-{rank} tensor")
    if contract.options is not None and not isinstance(op.builtinOptions, contract.options):
        got = "none" if op.builtinOptions is None else type(op.builtinOptions).__name__[:-1]
        fail(f"{where} needs {contract.options.__name__[:-1]}, has {got}")
    for field in contract.positive:
        value = getattr(op.builtinOptions, field)
        if value < 1:
            fail(f"{where} has {field} {value} (must be at least 1)")


def check_graph(graph, name):
    """Raise TinyVisionError unless ``graph`` (a ``converters.ir.Graph``) is a dataflow graph TFLM can run in
    order: every operator reads graph inputs, constants, variables or earlier outputs, and writes tensors
    nothing else writes."""
    where = name if not graph.name else f"{name}: subgraph {graph.name!r}"
    written = set(graph.inputs)
    for j, op in enumerate(graph.ops):
        for t in op.inputs:
            if t is None or t.is_constant or t.is_variable or t in written:
                continue
            later = " (it writes it itself)" if t in op.outputs else ""
            raise TinyVisionError(f"{where}: operator {j} ({op.opcode}) reads tensor {t.name!r}, which no earlier "
                                  f"operator writes{later}: the graph has a cycle or a dangling input")
        for t in op.outputs:
            if t in written:
                raise TinyVisionError(f"{where}: operator {j} ({op.opcode}) writes tensor {t.name!r}, which is "
                                      "already a graph input or another operator's output")
            written.add(t)
    for t in graph.outputs:
        if t not in written and not t.is_constant:
            raise TinyVisionError(f"{where}: graph output {t.name!r} is written by no operator")


def _texts(fb):
    """(where, raw string) of every name and code string the IR decodes."""
    yield "the description", fb.description
    for m in fb.metadata or []:
        yield "a metadata name", m.name
    for k, code in enumerate(fb.operatorCodes or []):
        yield f"operator code {k}'s custom code", code.customCode
    for k, sg in enumerate(fb.subgraphs or []):
        yield f"subgraph {k}'s name", sg.name
        for i, t in enumerate(sg.tensors or []):
            yield f"subgraph {k}: tensor {i}'s name", t.name
    for s in fb.signatureDefs or []:
        yield "a signature key", s.signatureKey
        for m in (s.inputs or []) + (s.outputs or []):
            yield "a signature tensor name", m.name


def _indices(values):
    return [] if values is None else values


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

