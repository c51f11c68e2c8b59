"""Which tensors TFLM plans into the arena's head, for how long, and which ops may write in place.

The one model of TFLM's buffer lifetimes in this project (the analytic profile in
``tinyvision.analysis.memory``, the offline planner and the reorder pass all use it).
Lifetimes follow TFLM's ``AllocationInfoBuilder::MarkAllocationLifetimes``
(tensorflow/lite/micro/micro_allocation_info.cc, tflite-micro main of 2026-08)
in *allocation scopes*: scope 0 is the start of the main subgraph, op ``i`` runs
in scope ``i + 1``, and a control-flow op (IF, WHILE, CALL_ONCE) enters one more
scope for each subgraph it runs, which is marked there recursively. Lifetimes
are inclusive ``[first, last]`` and two buffers conflict when their scopes
intersect (GreedyMemoryPlanner::DoesEntryOverlapInTime), so in TFLM's own
planner an op's inputs and outputs always conflict:

* a tensor is created once, at its first creation: subgraph inputs on entry,
  an op's outputs in the op's scope, a subgraph output nobody created before
  at the subgraph's end (so such an output lives in the final scope only, even
  if an op reads it: checked on the tflite-micro pip package);
* it is last used in the last scope that reads or writes it; subgraph inputs
  are used on entry and subgraph outputs in the subgraph's final scope;
* a tensor read but never produced nor fed keeps ``first == -1``;
* an op's kernel scratch buffers live from the op's scope to the last scope of
  the subgraphs it runs.

TFLM plans a tensor when it has no buffer in the flatbuffer (not a constant),
is not a variable (those are persistent) and has a non-zero byte size; each
planned buffer is rounded up to 16 bytes (``MicroArenaBufferAlignment``).
"""
import dataclasses

import numpy as np

from converters.ir.graph import Graph, Tensor
from tinyvision.errors import TinyVisionError

ALIGNMENT = 16
UNCREATED = -1  # kUninitializedLifetime

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
    """Op ``op_index`` may write ``output`` over ``input``, which sits ``shift`` bytes above it
    (0: the same buffer, for elementwise ops; see ``overlap`` for the shifted ones)."""

    op_index: int
    output: Tensor
    input: Tensor
    shift: int = 0


def needs_allocating(tensor):
    """TFLM's rule: no flatbuffer data, not a variable, non-zero bytes."""
    return not tensor.is_constant and not tensor.is_variable and tensor.nbytes > 0


def allocation_scopes(subgraphs, name="model", nested=True):
    """TFLM's allocation scopes for every tensor and op of a model's subgraphs (main graph first).

    nested: mark the subgraphs that control-flow ops run, as TFLM does (False: treat those
    ops like any other, for a graph on its own).
    Returns (tensors, ops): ``tensors[s]`` maps each tensor subgraph ``s`` references to its
    ``[first, last]`` scopes; ``ops[s][i]`` is the ``(first, last)`` scope range of op ``i``
    of subgraph ``s``, which its scratch buffers span (a control-flow op's range covers the
    subgraphs it runs; a subgraph run twice gets its first start and last end, as in TFLM;
    one never run keeps (-1, -1)).
    Raises TinyVisionError if a control-flow op calls a subgraph that does not exist.
    """
    tensors = [{t: [UNCREATED, UNCREATED] for t in g.used_tensors()} for g in subgraphs]
    ops = [[(UNCREATED, UNCREATED)] * len(g.ops) for g in subgraphs]
    scope = 0

    def created(record, at):
        if record[0] == UNCREATED:  # TFLM records only the first creation
            record[0] = at

    def mark(s):
        nonlocal scope
        graph, life = subgraphs[s], tensors[s]
        for t in graph.inputs:
            if t is not None:
                created(life[t], scope)
                life[t][1] = scope
        for i, op in enumerate(graph.ops):
            scope += 1
            start = scope
            for t in op.outputs:
                created(life[t], scope)
            for sub in _called_subgraphs(op) if nested else ():
                if not 0 <= sub < len(subgraphs):
                    raise TinyVisionError(f"{name}: {op.opcode} calls subgraph {sub}, which does not exist")
                scope += 1
                mark(sub)
            for t in op.inputs + op.outputs:
                if t is not None:
                    life[t][1] = scope
            ops[s][i] = (start if ops[s][i][0] == UNCREATED else ops[s][i][0], scope)
        for t in graph.outputs:
            if t is not None:
                created(life[t], scope)
                life[t][1] = scope

    if subgraphs:
        mark(0)
    return tensors, ops


def tensor_lifetimes(graph: Graph, scopes=None):
    """The tensors TFLM plans for ``graph`` and their lifetimes, in exported tensor order.

    scopes: ``graph``'s entry of ``allocation_scopes`` when it is one subgraph of a model
    (default: ``graph`` on its own, control-flow ops taken as plain ops).
    Returns a list of ``Lifetime`` (one per planned tensor, ``index`` ascending).
    """
    if scopes is None:
        scopes = allocation_scopes([graph], nested=False)[0][0]
    return [
        Lifetime(t, index, *scopes[t], align_up(t.nbytes))
        for index, t in enumerate(graph.used_tensors())
        if needs_allocating(t)
    ]


def live_bytes(buffers, spans):
    """The most bytes alive in one scope of each span.

    buffers: objects with ``size``, ``first`` and ``last`` (inclusive scopes; ``first`` -1 =
    from the start); spans: ``(first, last)`` scope ranges, e.g. one per op. Returns one int
    per span: the largest sum of ``size`` over the buffers alive in any scope of the span.
    """
    top = max([b.last for b in buffers] + [last for _, last in spans] + [0]) + 1
    delta = np.zeros(top + 1, dtype=np.int64)
    for b in buffers:
        if b.last >= 0:
            delta[max(b.first, 0)] += b.size
            delta[b.last + 1] -= b.size
    live = np.cumsum(delta)
    return [int(live[first : last + 1].max()) for first, last in spans]


def _called_subgraphs(op):
    """Subgraphs a control-flow op runs, in the order TFLM plans them."""
    o = op.options
    if op.opcode == "IF":
        return [o.thenSubgraphIndex, o.elseSubgraphIndex]
    if op.opcode == "WHILE":
        return [o.condSubgraphIndex, o.bodySubgraphIndex]
    if op.opcode == "CALL_ONCE":
        return [o.initSubgraphIndex]
    return []


def _same_layout(a, b):
    return a.shape == b.shape and np.dtype(a.dtype) == np.dtype(b.dtype)


def in_place_candidates(graph: Graph, lifetimes=None, overlap=True):
    """Every (op, output, input) where the output may safely take the input's buffer.

    Conditions: an elementwise op (see ``ELEMENTWISE_*``) or RESHAPE with one output;
    the input is planned, dies in this op, is not a graph output, and has the output's
    shape and dtype (RESHAPE: the same byte size); binary ops must not broadcast.
    overlap: also the raster-order ops of ``overlap`` (depthwise, PAD), whose output may
    overlap their dying input when it starts ``shift`` bytes below it.
    Returns a list of ``InPlace`` in op order, inputs in operand order.
    """
    from converters.planning.overlap import required_shift

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
        elif overlap and required_shift(op) is not None:
            lt = life.get(op.inputs[0])
            if lt is not None and lt.last == i + 1 and op.inputs[0] not in outputs:
                candidates.append(InPlace(i, out, op.inputs[0], align_up(required_shift(op))))
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
