"""Analytic tensor-arena planning: TFLM's lifetimes and GreedyMemoryPlanner, replicated without TFLM.

TFLM splits its arena into a head (activation buffers, planned so that buffers
whose lifetimes do not overlap share memory) and a tail (persistent data). This
module predicts the head from the .tflite alone, following tflite-micro:

* ``micro_allocation_info.cc`` (``AllocationInfoBuilder``): every tensor of every
  subgraph gets an allocation record, in file order, followed by kernel scratch
  buffers in request order. Scope 0 is the start of the main subgraph; op ``i``
  is scope ``i + 1``. Subgraph inputs (and outputs) are created at the start,
  an op's outputs are created at its scope, inputs and outputs are last used at
  the scope of the last op touching them, and subgraph outputs live to the end.
  Control-flow ops (IF, WHILE, CALL_ONCE) plan their subgraphs in nested scopes.
  A tensor needs arena space when it has no data in the flatbuffer, is not a
  variable (variables go to the tail) and has a non-zero size. Tensors that no
  op touches keep lifetime (-1, -1) and are still planned, as in TFLM.
* ``micro_allocator.cc`` (``CreatePlan``): each size is aligned up to 16 bytes.
* ``memory_planner/greedy_memory_planner.cc``: offline-planned buffers first,
  then the others by decreasing size (a stable sort of the records in reverse
  order), each placed in the first gap, in offset order, that is free for its
  whole lifetime. The head is the highest end offset.

Kernel scratch buffers (``RequestScratchBufferInArena``) of TFLM's reference
kernels are planned like tensors alive during their op. Among the int8 ops a
vision model uses, only these request any: MEAN and SUM (an int32 accumulator
per output element for int8/int16 inputs, then int32 per input dimension and
per reduction axis), REDUCE_MAX / REDUCE_MIN (per input dimension and axis) and
TRANSPOSE_CONV (an int32 or int64 accumulator per output element). CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, pooling, ADD, MUL, SOFTMAX, RESHAPE,
CONCATENATION, PAD, QUANTIZE... request none in the reference kernels. The
optimized CMSIS-NN kernels of an Arduino build request more (e.g. im2col
buffers for CONV_2D), which this model does not include: there the head can be
larger than predicted here.
"""
import bisect
import dataclasses
from typing import Optional

import numpy as np

from tinyvision.errors import TinyVisionError

ALIGNMENT = 16  # MicroArenaBufferAlignment()
_OFFLINE_METADATA = "OfflineMemoryAllocation"
_ONLINE = -1  # kOnlinePlannedBuffer


@dataclasses.dataclass(frozen=True)
class Buffer:
    """One arena buffer of the plan.

    kind: "tensor" or "scratch"; op: the op index (in ``subgraph``) that requests a
    scratch buffer, or None for tensors. ``bytes`` is the exact size, ``size`` the
    16-aligned size planned; ``first``/``last`` are TFLM allocation scopes (op i of the
    main graph is scope i + 1); ``offset`` is the planned offset from the arena head.
    """

    name: str
    kind: str
    subgraph: int
    op: Optional[int]
    bytes: int
    size: int
    first: int
    last: int
    offset: int


@dataclasses.dataclass(frozen=True)
class OpMemory:
    """Arena use while one op of the main graph runs.

    live_bytes: 16-aligned bytes of every planned buffer alive at the op (its inputs,
    outputs, scratch and everything kept for later ops); live: their names.
    """

    index: int
    opcode: str
    output: str
    live_bytes: int
    scratch_bytes: int
    live: tuple


@dataclasses.dataclass(frozen=True)
class MemoryProfile:
    """Per-op live memory and TFLM's planned head for a model (bytes).

    peak_bytes: the largest ``live_bytes`` (a lower bound for any planner);
    head_bytes: the greedy plan's size, which TFLM reports as its arena head;
    variable_bytes: variable tensors, which TFLM keeps in the tail instead.
    """

    ops: list
    buffers: list
    peak_bytes: int
    peak_op: int
    head_bytes: int
    variable_bytes: int

    def fragmentation_bytes(self):
        """Head bytes the greedy plan spends above the live-memory peak."""
        return self.head_bytes - self.peak_bytes


def align_up(n, alignment=ALIGNMENT):
    return (n + alignment - 1) // alignment * alignment


def as_model(model, name="model"):
    """``converters.ir.Model`` from .tflite bytes or a Model."""
    from converters.ir import Model

    if isinstance(model, Model):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return Model.from_bytes(bytes(model), name)
    raise TypeError(f"expected .tflite bytes or a converters.ir.Model, got {type(model).__name__}")


def memory_profile(model, name="model"):
    """Plan the arena of ``model`` (.tflite bytes or ``converters.ir.Model``) like TFLM; return a MemoryProfile."""
    model = as_model(model, name)
    buffers, op_scopes = plan_buffers(model, name)
    variable_bytes = sum(
        align_up(t.nbytes) for g in model.subgraphs for t in g.used_tensors() if t.is_variable and t.nbytes
    )
    scopes = max([b.last for b in buffers] + [0]) + 1
    live_at = np.zeros(scopes + 1, dtype=np.int64)
    for b in buffers:
        if b.last >= 0:
            live_at[max(b.first, 0) : b.last + 1] += b.size
    ops = []
    for index, (op, (first, last)) in enumerate(zip(model.main.ops, op_scopes)):
        here = [b for b in buffers if b.first <= last and b.last >= first]
        ops.append(
            OpMemory(
                index=index,
                opcode=op.opcode,
                output=op.outputs[0].name if op.outputs else "",
                live_bytes=int(live_at[first : last + 1].max()),
                scratch_bytes=sum(b.size for b in here if b.kind == "scratch" and b.subgraph == 0 and b.op == index),
                live=tuple(b.name for b in here),
            )
        )
    peak_op = int(np.argmax([o.live_bytes for o in ops])) if ops else 0
    return MemoryProfile(
        ops=ops,
        buffers=buffers,
        peak_bytes=ops[peak_op].live_bytes if ops else 0,
        peak_op=peak_op,
        head_bytes=max([b.offset + b.size for b in buffers] + [0]),
        variable_bytes=variable_bytes,
    )


def plan_buffers(model, name="model"):
    """TFLM's arena buffers for ``model`` with lifetimes and greedy offsets.

    Returns (buffers, op_scopes): ``op_scopes[i]`` is the (first, last) scope range of
    main-graph op i (a control-flow op spans the scopes of the subgraphs it runs).
    """
    model = as_model(model, name)
    tensors = [g.used_tensors() for g in model.subgraphs]
    lifetime = [{t: [-1, -1] for t in ts} for ts in tensors]
    requests = [(si, oi, nbytes) for si, g in enumerate(model.subgraphs) for oi, op in enumerate(g.ops)
                for nbytes in scratch_requests(op)]
    scratch_life = [[-1, -1] for _ in requests]
    scope = [0]
    op_scopes = []

    def created(record, at):
        record[0] = at
        record[1] = at

    def mark(si, top):
        graph = model.subgraphs[si]
        life = lifetime[si]
        for t in graph.inputs + graph.outputs:
            if t is not None:
                created(life[t], scope[0])
        for oi, op in enumerate(graph.ops):
            scope[0] += 1
            start = scope[0]
            for t in op.outputs:
                created(life[t], scope[0])
            for sub in _called_subgraphs(op):
                if not 0 <= sub < len(model.subgraphs):
                    raise TinyVisionError(f"{name}: {op.opcode} calls subgraph {sub}, which does not exist")
                scope[0] += 1
                mark(sub, False)
            for t in op.inputs + op.outputs:
                if t is not None:
                    life[t][1] = scope[0]
            for k, (rs, ro, _) in enumerate(requests):
                if rs == si and ro == oi:
                    scratch_life[k] = [start, scope[0]]
            if top:
                op_scopes.append((start, scope[0]))
        for t in graph.outputs:
            if t is not None:
                life[t][1] = scope[0]

    mark(0, True)

    offline = _offline_offsets(model, sum(len(ts) for ts in tensors), name)
    entries = []  # (name, kind, subgraph, op, bytes, first, last, offline offset)
    position = 0
    for si, ts in enumerate(tensors):
        for t in ts:
            if not t.is_constant and not t.is_variable and t.nbytes > 0:
                first, last = lifetime[si][t]
                fixed = offline[position] if offline else _ONLINE
                entries.append((t.name, "tensor", si, None, t.nbytes, first, last, fixed))
            position += 1
    for k, ((si, oi, nbytes), (first, last)) in enumerate(zip(requests, scratch_life)):
        op = model.subgraphs[si].ops[oi]
        label = f"{op.opcode} #{oi} scratch {k}" if si == 0 else f"{op.opcode} #{oi} (subgraph {si}) scratch {k}"
        entries.append((label, "scratch", si, oi, nbytes, first, last, _ONLINE))

    offsets = greedy_offsets([(align_up(e[4]), e[5], e[6], e[7]) for e in entries])
    buffers = [
        Buffer(name=e[0], kind=e[1], subgraph=e[2], op=e[3], bytes=e[4], size=align_up(e[4]), first=e[5], last=e[6],
               offset=off)
        for e, off in zip(entries, offsets)
    ]
    return buffers, op_scopes


def greedy_offsets(requirements):
    """Offsets chosen by TFLM's GreedyMemoryPlanner.

    requirements: list of (size, first_time_used, last_time_used, offline_offset), in the
    order TFLM adds them (offline_offset -1 = plan online). Returns one offset per buffer.
    """
    count = len(requirements)
    if count == 0:
        return []
    # CalculateOffsetsIfNeeded: offline buffers at the front in order; online ones filled
    # from the back (so reversed), then stably sorted by decreasing size.
    offline = [i for i, r in enumerate(requirements) if r[3] != _ONLINE]
    online = [i for i, r in enumerate(requirements) if r[3] == _ONLINE][::-1]
    online.sort(key=lambda i: -requirements[i][0])
    order = offline + online
    offsets = [requirements[i][3] if requirements[i][3] != _ONLINE else -1 for i in range(count)]

    placed_offsets = []  # ascending, parallel to placed_ids (the offset-ordered linked list)
    placed_ids = []
    for position, i in enumerate(order):
        size, first, last, fixed = requirements[i]
        if position == 0:
            candidate = 0 if fixed == _ONLINE else fixed
        elif fixed != _ONLINE:
            candidate = fixed
        else:
            candidate = 0
            for j, offset in zip(placed_ids, placed_offsets):
                _, jfirst, jlast, _ = requirements[j]
                if jfirst > last or first > jlast:
                    continue  # not alive at the same time
                if offset - candidate >= size:
                    break  # the gap before this buffer fits
                candidate = max(candidate, offset + requirements[j][0])
        offsets[i] = candidate
        # Inserted after every entry whose offset is <= candidate (before the first larger one).
        at = bisect.bisect_right(placed_offsets, candidate)
        placed_offsets.insert(at, candidate)
        placed_ids.insert(at, i)
    return offsets


def scratch_requests(op):
    """Bytes of each scratch buffer TFLM's reference kernel for ``op`` requests, in request order."""
    inputs = op.inputs
    if op.opcode in ("MEAN", "SUM"):
        data, axis = inputs[0], inputs[1]
        sizes = []
        if np.dtype(data.dtype) in (np.dtype(np.int8), np.dtype(np.int16)):
            sizes.append(4 * op.outputs[0].size)
        return sizes + [4 * len(data.shape), 4 * axis.size]
    if op.opcode in ("REDUCE_MAX", "REDUCE_MIN"):
        return [4 * len(inputs[0].shape), 4 * inputs[1].size]
    if op.opcode == "TRANSPOSE_CONV":
        data = inputs[2]
        if np.dtype(data.dtype) == np.int8:
            return [4 * op.outputs[0].size]
        if np.dtype(data.dtype) == np.int16:
            return [8 * op.outputs[0].size]
    return []


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


def _offline_offsets(model, tensor_count, name):
    """Per-tensor offsets from "OfflineMemoryAllocation" metadata, or None."""
    data = model.metadata.get(_OFFLINE_METADATA)
    if not data:
        return None
    words = np.frombuffer(data, dtype=np.int32)
    if len(words) < 3 or words[2] != tensor_count or len(words) < 3 + tensor_count:
        raise TinyVisionError(f"{name}: offline memory plan lists {words[2] if len(words) > 2 else 0} "
                              f"tensors, the model has {tensor_count}")
    return [int(v) for v in words[3 : 3 + tensor_count]]
