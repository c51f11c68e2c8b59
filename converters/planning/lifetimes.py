"""Which tensors TFLM plans into the arena's head, for how long, and which ops may write in place.

Lifetimes follow TFLM's ``AllocationInfoBuilder::MarkAllocationLifetimes``
(tensorflow/lite/micro/micro_allocation_info.cc, tflite-micro main of 2026-08)
for a single subgraph, in *allocation scopes*: scope 0 is the start of the
invocation, op ``i`` runs in scope ``i + 1``. Lifetimes are inclusive
``[first, last]`` and two buffers conflict when their scopes intersect
(GreedyMemoryPlanner::DoesEntryOverlapInTime), so in TFLM's own planner an op's
inputs and outputs always conflict:

* a tensor is created once, at its first creation: graph inputs at scope 0,
  an op's outputs in the op's scope, a graph output nobody produces at the end;
* it is last used in the last scope that reads or writes it; graph inputs are
  used at scope 0 and graph outputs in the final scope (the number of ops);
* a tensor read but never produced nor fed keeps ``first == -1``.

TFLM plans a tensor when it has no buffer in the flatbuffer (not a constant),
is not a variable (those are persistent) and has a non-zero byte size; each
planned buffer is rounded up to 16 bytes (``MicroArenaBufferAlignment``).
"""
import dataclasses

import numpy as np

from converters.ir.graph import Graph, Tensor

ALIGNMENT = 16

# Ops whose output may take exactly an input's buffer: every output element i
# is computed from input element i only, and the TFLM reference kernels (and
# CMSIS-NN's block-of-4 versions) read input i before writing output i, so an
# output at the same address as an input that dies in this op is correct.
# Binary ops qualify only without broadcasting (checked on shapes).
ELEMENTWISE_BINARY = frozenset({"ADD", "SUB", "MUL"})
ELEMENTWISE_UNARY = frozenset(
    {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "LOGISTIC", "TANH", "HARD_SWISH", "QUANTIZE"}
)
# RESHAPE copies nothing when its output already aliases its input (TFLM reshape.cc).
ALIASING_RESHAPES = frozenset({"RESHAPE"})


def align_up(nbytes, alignment=ALIGNMENT):
    return -(-int(nbytes) // alignment) * alignment


@dataclasses.dataclass(frozen=True, eq=False)
class Lifetime:
    """One tensor TFLM plans into the head: scopes ``[first, last]`` and its 16-byte-aligned size.

    index: position in the exported tensor list (``graph.used_tensors()``).
    """

    tensor: Tensor
    index: int
    first: int
    last: int
    size: int

    def overlaps(self, other):
        return not (self.first > other.last or other.first > self.last)


@dataclasses.dataclass(frozen=True, eq=False)
class InPlace:
    """Op ``op_index`` may write ``output`` over ``input`` (same offset, same size)."""

    op_index: int
    output: Tensor
    input: Tensor


def needs_allocating(tensor):
    """TFLM's rule: no flatbuffer data, not a variable, non-zero bytes."""
    return not tensor.is_constant and not tensor.is_variable and tensor.nbytes > 0


def tensor_lifetimes(graph: Graph):
    """The tensors TFLM plans for ``graph`` and their lifetimes, in exported tensor order.

    Returns a list of ``Lifetime`` (one per planned tensor, ``index`` ascending).
    """
    tensors = graph.used_tensors()
    first, last = {}, {}

    def created(t, scope):
        if first.get(t, -1) == -1:  # TFLM records only the first creation
            first[t] = scope

    def used(t, scope):
        first.setdefault(t, -1)
        last[t] = scope

    for t in graph.inputs:
        if t is not None:
            created(t, 0)
            used(t, 0)
    for i, op in enumerate(graph.ops):
        scope = i + 1
        for t in op.outputs:
            created(t, scope)
        for t in op.inputs + op.outputs:
            if t is not None:
                used(t, scope)
    for t in graph.outputs:
        if t is not None:
            created(t, len(graph.ops))
            used(t, len(graph.ops))
    return [
        Lifetime(t, index, first[t], last[t], align_up(t.nbytes))
        for index, t in enumerate(tensors)
        if needs_allocating(t) and t in first
    ]


def _same_layout(a, b):
    return a.shape == b.shape and np.dtype(a.dtype) == np.dtype(b.dtype)


def in_place_candidates(graph: Graph, lifetimes=None):
    """Every (op, output, input) where the output may safely take the input's buffer.

    Conditions: an elementwise op (see ``ELEMENTWISE_*``) or RESHAPE with one output;
    the input is planned, dies in this op, is not a graph output, and has the output's
    shape and dtype (RESHAPE: the same byte size); binary ops must not broadcast.
    Returns a list of ``InPlace`` in op order, inputs in operand order.
    """
    lifetimes = tensor_lifetimes(graph) if lifetimes is None else lifetimes
    life = {lt.tensor: lt for lt in lifetimes}
    outputs = set(graph.outputs)
    candidates = []
    for i, op in enumerate(graph.ops):
        if len(op.outputs) != 1 or op.outputs[0] not in life or op.outputs[0] in set(graph.inputs):
            continue
        out = op.outputs[0]
        if op.opcode in ELEMENTWISE_BINARY:
            operands = [t for t in op.inputs if t is not None]
            if len(operands) != 2 or not all(_same_layout(t, out) for t in operands):
                continue
        elif op.opcode in ELEMENTWISE_UNARY:
            operands = op.inputs[:1]
            if not operands or operands[0] is None or not _same_layout(operands[0], out):
                continue
        elif op.opcode in ALIASING_RESHAPES:
            operands = op.inputs[:1]
            if not operands or operands[0] is None or operands[0].nbytes != out.nbytes:
                continue
        else:
            continue
        seen = set()
        for t in operands:
            if t in seen or t is out:
                continue
            seen.add(t)
            lt = life.get(t)
            if lt is None or lt.last != i + 1 or t in outputs or lt.size != life[out].size:
                continue
            candidates.append(InPlace(i, out, t))
    return candidates
