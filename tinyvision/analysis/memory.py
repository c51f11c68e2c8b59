"""Analytic tensor-arena planning: TFLM's allocation records and GreedyMemoryPlanner, without TFLM.

TFLM splits its arena into a head (activation buffers, planned so that buffers
whose lifetimes do not overlap share memory) and a tail (persistent data). This
module predicts the head from the .tflite alone, following tflite-micro:

* ``micro_allocation_info.cc`` (``AllocationInfoBuilder``): every tensor of every
  subgraph gets an allocation record, in file order, followed by kernel scratch
  buffers in request order, with the lifetimes of
  ``converters.planning.lifetimes.allocation_scopes`` (nested scopes for the
  subgraphs of control-flow ops) and TFLM's rule for which tensors need arena
  space; "OfflineMemoryAllocation" metadata fixes some offsets.
* ``micro_allocator.cc`` (``CreatePlan``): each size is aligned up to 16 bytes.
* ``memory_planner/greedy_memory_planner.cc``: replicated by
  ``converters.planning.greedy``; the head is the highest end offset.

Kernel scratch buffers (``RequestScratchBufferInArena``) depend on the kernels
(``converters.planning.scratch.op_scratch``): by default those of TFLM's reference
kernels, which the host runs (among the int8 ops a vision model uses, only MEAN /
SUM, REDUCE_MAX / REDUCE_MIN and TRANSPOSE_CONV request any); ``kernels="cmsis_nn"``
gives the head on the Nano 33 BLE, whose Arduino TFLM libraries run CMSIS-NN
kernels that request more (im2col buffers for CONV_2D and DEPTHWISE_CONV_2D, sums
for AVERAGE_POOL_2D).
"""
import dataclasses
from typing import Optional

import numpy as np

from converters.ir import Model
from converters.planning import greedy
from converters.planning.lifetimes import align_up, allocation_scopes, live_bytes, tensor_lifetimes
from converters.planning.metadata import METADATA_NAME, ONLINE
from converters.planning.scratch import op_scratch
from tinyvision.errors import TinyVisionError


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

    peak_bytes: the largest ``live_bytes`` (a lower bound for planners that keep every live buffer
    apart, as TFLM's own does; an offline plan that lets an output overlap its dying input goes below it);
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


def as_model(model, name="model"):
    """``converters.ir.Model`` from .tflite bytes or a Model."""
    if isinstance(model, Model):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return Model.from_bytes(bytes(model), name)
    raise TypeError(f"expected .tflite bytes or a converters.ir.Model, got {type(model).__name__}")


def memory_profile(model, name="model", kernels="reference"):
    """Plan the arena of ``model`` (.tflite bytes or ``converters.ir.Model``) like TFLM; return a MemoryProfile.

    kernels: whose scratch requests: "reference" (host TFLM) or "cmsis_nn" (the Nano 33 BLE).
    """
    model = as_model(model, name)
    buffers, op_scopes = plan_buffers(model, name, kernels)
    variable_bytes = sum(
        align_up(t.nbytes) for g in model.subgraphs for t in g.used_tensors() if t.is_variable and t.nbytes
    )
    ops = []
    for index, (op, (first, last), live) in enumerate(zip(model.main.ops, op_scopes, live_bytes(buffers, op_scopes))):
        here = [b for b in buffers if b.first <= last and b.last >= first]
        ops.append(
            OpMemory(
                index=index,
                opcode=op.opcode,
                output=op.outputs[0].name if op.outputs else "",
                live_bytes=live,
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


def plan_buffers(model, name="model", kernels="reference"):
    """TFLM's arena buffers for ``model`` with lifetimes and greedy offsets (scratch of ``kernels``).

    Returns (buffers, op_scopes): ``op_scopes[i]`` is the (first, last) scope range of
    main-graph op i (a control-flow op spans the scopes of the subgraphs it runs).
    """
    model = as_model(model, name)
    scopes, op_scopes = allocation_scopes(model.subgraphs, name)
    first_index = np.cumsum([0] + [len(g.used_tensors()) for g in model.subgraphs])
    offline = _offline_offsets(model, int(first_index[-1]), name)
    buffers, fixed = [], []  # in the order TFLM adds them; offsets come from the greedy plan
    for si, graph in enumerate(model.subgraphs):
        for lt in tensor_lifetimes(graph, scopes[si]):
            buffers.append(Buffer(lt.tensor.name, "tensor", si, None, lt.tensor.nbytes, lt.size, lt.first, lt.last, -1))
            fixed.append(offline[first_index[si] + lt.index] if offline else ONLINE)
    requests = [(si, oi, op, nbytes) for si, graph in enumerate(model.subgraphs) for oi, op in enumerate(graph.ops)
                for nbytes in op_scratch(op, kernels)]
    for k, (si, oi, op, nbytes) in enumerate(requests):
        where = f"#{oi}" if si == 0 else f"#{oi} (subgraph {si})"
        buffers.append(Buffer(f"{op.opcode} {where} scratch {k}", "scratch", si, oi, nbytes, align_up(nbytes),
                              *op_scopes[si][oi], -1))
        fixed.append(ONLINE)
    offsets = greedy_offsets([(b.size, b.first, b.last, f) for b, f in zip(buffers, fixed)])
    return [dataclasses.replace(b, offset=o) for b, o in zip(buffers, offsets)], op_scopes[0]


def greedy_offsets(requirements):
    """Offsets chosen by TFLM's GreedyMemoryPlanner (``converters.planning.greedy.plan``).

    requirements: list of (size, first_time_used, last_time_used, offline_offset), in the
    order TFLM adds them (offline_offset -1 = plan online). Returns one offset per buffer.
    """
    requests = [greedy.Request(size, first, last, None if fixed == ONLINE else fixed)
                for size, first, last, fixed in requirements]
    return greedy.plan(requests)[0]


def _offline_offsets(model, tensor_count, name):
    """Per-tensor offsets from "OfflineMemoryAllocation" metadata, or None."""
    data = model.metadata.get(METADATA_NAME)
    if not data:
        return None
    words = np.frombuffer(data, dtype=np.int32)
    if len(words) < 3 or words[2] != tensor_count or len(words) < 3 + tensor_count:
        raise TinyVisionError(f"{name}: offline memory plan lists {words[2] if len(words) > 2 else 0} "
                              f"tensors, the model has {tensor_count}")
    return [int(v) for v in words[3 : 3 + tensor_count]]
