"""Offline arena plans for one single-subgraph graph: ``plan_graph`` -> ``MemoryPlan``.

Every tensor TFLM plans (``lifetimes.tensor_lifetimes``) gets a byte offset in
the arena's head (the non-persistent section). A plan may also:

* reuse an input's buffer for an elementwise op's output (``in_place``): the
  pair becomes one block spanning both lifetimes, which removes the input's
  bytes from the op's live set (``lifetimes.in_place_candidates`` says where
  this is safe); for depthwise convolutions and PAD the output starts a few
  bytes below the input and overlaps it (``overlap``);
* keep out of ``reserved`` byte ranges (e.g. a patch bundle's stage buffer),
  and keep ``pinned`` tensors at given offsets (e.g. the tail model's input at
  the stage);
* leave room for kernel ``scratch`` buffers, which TFLM always plans itself at
  run time around the offline offsets: their offsets in the plan are the ones
  TFLM's greedy planner will choose (``greedy.plan``), so ``size`` is the head
  TFLM will report.

Several in-place choices (all, none, the other operand) are packed and the
smallest valid plan wins; ties go to fewer in-place pairs. Each plan is
validated by ``check.check_plan`` before it is returned.
"""
import dataclasses
from typing import Optional

from converters.ir.graph import Graph
from converters.planning import greedy
from converters.planning.check import check_plan
from converters.planning.lifetimes import ALIGNMENT, align_up, in_place_candidates, tensor_lifetimes
from converters.planning.packing import DEFAULT_EFFORT, Block, pack
from converters.planning.scratch import cmsis_nn_scratch, reference_scratch
from tinyvision.errors import TinyVisionError


@dataclasses.dataclass(frozen=True)
class Scratch:
    """A kernel scratch buffer: request ``index`` of op ``op_index``, live in that op's scope only."""

    op_index: int
    index: int
    size: int
    offset: int

    @property
    def first(self):
        return self.op_index + 1

    @property
    def last(self):
        return self.op_index + 1


@dataclasses.dataclass(eq=False)
class MemoryPlan:
    """An offline plan for ``graph``'s arena head (all offsets and sizes in bytes, 16-byte aligned).

    offsets: Tensor -> offset for every tensor in ``lifetimes`` (the tensors TFLM plans).
    in_place: the ``InPlace`` pairs whose output shares its input's offset.
    scratch: TFLM's placement of the kernel scratch buffers the plan was made with.
    reserved: [start, end) ranges no buffer may use; pinned: Tensor -> required offset.
    region: the byte limit the plan had to fit (None = unbounded).
    size: the head TFLM reports with this plan = max(offset + aligned size) over tensors and scratch.
    lower_bound: largest live bytes in any scope with these in-place pairs (reserved counted as live).
    tflm_greedy_size: the head TFLM's own planner reaches without an offline plan.
    """

    graph: Graph
    lifetimes: list
    offsets: dict
    in_place: list
    scratch: list
    reserved: tuple
    pinned: dict
    region: Optional[int]
    size: int
    lower_bound: int
    tflm_greedy_size: int
    strategy: str

    @property
    def footprint(self):
        """Bytes of the region the plan occupies: its size or the end of a reserved range, if higher."""
        return max([self.size] + [end for _, end in self.reserved])

    def offline_offsets(self):
        """One int per tensor of ``graph.used_tensors()`` (the exported order): offset, or -1 if TFLM places it."""
        return [self.offsets.get(t, -1) for t in self.graph.used_tensors()]

    def summary(self):
        return (
            f"arena head {self.size} B (lower bound {self.lower_bound} B, TFLM greedy {self.tflm_greedy_size} B, "
            f"{len(self.in_place)} in-place, {self.strategy})"
        )


def plan_graph(graph: Graph, reserved=(), pinned=None, region=None, in_place=True, scratch=None,
               effort=DEFAULT_EFFORT, name=None, overlap=True):
    """Plan every TFLM-planned tensor of ``graph`` (ops in execution order); returns a checked ``MemoryPlan``.

    reserved: [start, end) byte ranges to keep free (widened to 16-byte boundaries).
    pinned: {Tensor: offset} (16-byte aligned) for tensors that must sit at a given offset.
    region: bytes available; TinyVisionError if no plan fits.
    in_place: allow elementwise outputs to reuse a dying input's buffer.
    overlap: with in_place, also let depthwise and PAD outputs overlap their dying input.
    scratch: {op index: [bytes, ...]} kernel scratch requests of the target's kernels, in request order.
    effort: local-search evaluations per packing.
    """
    name = name or graph.name or "graph"
    lifetimes = tensor_lifetimes(graph)
    life = {lt.tensor: lt for lt in lifetimes}
    reserved = tuple(sorted((s // ALIGNMENT * ALIGNMENT, align_up(e)) for s, e in reserved if e > s))
    pinned = dict(pinned or {})
    for t, off in pinned.items():
        if t not in life:
            raise TinyVisionError(f"{name}: cannot pin {t.name!r}: TFLM does not plan it in the arena")
        if off < 0 or off % ALIGNMENT:
            raise TinyVisionError(f"{name}: pin of {t.name!r} at {off} is not a non-negative multiple of {ALIGNMENT}")
    requests = _scratch_requests(graph, scratch or {}, name)

    variants = [[]]
    if in_place:
        candidates = in_place_candidates(graph, lifetimes, overlap=overlap)
        for prefer_last in (False, True):
            pairs = _choose_pairs(candidates, pinned, prefer_last)
            if pairs and pairs not in variants:
                variants.append(pairs)

    best, failure = None, None
    for pairs in variants:
        groups = _groups(lifetimes, pairs)
        group_pins = [{pinned[t] - at for t, at in members.items() if t in pinned} for members in groups]
        if any(len(pins) > 1 or min(pins, default=0) < 0 for pins in group_pins):
            failure = "tensors sharing a buffer in place are pinned at offsets that do not fit together"
            continue
        blocks = []
        for members, pins in zip(groups, group_pins):
            blocks.append(Block(
                size=max(at + life[t].size for t, at in members.items()),
                first=min(life[t].first for t in members),
                last=max(life[t].last for t in members),
                pin=next(iter(pins), None),
                parts=tuple((at, life[t].size, life[t].first, life[t].last) for t, at in members.items())
                if len(members) > 1 else (),
            ))
        blocks += [Block(align_up(size), op + 1, op + 1, online=True) for op, _, size in requests]
        try:
            packing = pack(blocks, reserved, region=region, effort=effort)
        except ValueError as e:
            failure = str(e)
            continue
        key = (packing.footprint, packing.size, len(pairs))
        if best is None or key < best[0]:
            best = (key, pairs, groups, packing)
    if best is None:
        limit = f" within {region} bytes" if region is not None else ""
        raise TinyVisionError(f"{name}: no valid arena plan{limit} ({failure})")
    _, pairs, groups, packing = best
    offsets = {t: packing.offsets[g] + at for g, members in enumerate(groups) for t, at in members.items()}
    scratch_buffers = [
        Scratch(op, index, align_up(size), packing.offsets[len(groups) + k])
        for k, (op, index, size) in enumerate(requests)
    ]
    _, greedy_size = greedy.plan(
        [greedy.Request(lt.size, lt.first, lt.last) for lt in lifetimes]
        + [greedy.Request(align_up(size), op + 1, op + 1) for op, _, size in requests]
    )
    plan = MemoryPlan(
        graph=graph,
        lifetimes=lifetimes,
        offsets=offsets,
        in_place=pairs,
        scratch=scratch_buffers,
        reserved=reserved,
        pinned=pinned,
        region=region,
        size=packing.size,
        lower_bound=packing.lower_bound,
        tflm_greedy_size=greedy_size,
        strategy=packing.strategy,
    )
    check_plan(plan, name=name)
    return plan


def target_scratch(plan, scratch, target="target", name=None):
    """TFLM's placement of another kernel set's scratch requests around ``plan``'s tensors.

    A plan made for ``deployment_scratch`` runs on targets that each request only their own
    buffers (``reference_scratch`` on the host, ``cmsis_nn_scratch`` on the board): TFLM puts every
    planned tensor at its offline offset and places those requests online (``greedy.plan``).
    Returns (list of Scratch, head TFLM reports on that target); TinyVisionError naming ``target``
    when a buffer lands in a reserved range or beyond the plan's region.
    """
    name = name or plan.graph.name or "graph"
    requests = _scratch_requests(plan.graph, scratch or {}, name)
    tensors = [greedy.Request(lt.size, lt.first, lt.last, plan.offsets[lt.tensor]) for lt in plan.lifetimes]
    offsets, head = greedy.plan(tensors + [greedy.Request(align_up(size), op + 1, op + 1) for op, _, size in requests])
    placed = [Scratch(op, index, align_up(size), offset)
              for (op, index, size), offset in zip(requests, offsets[len(tensors):])]
    for s in placed:
        end = s.offset + s.size
        clash = [f"the reserved range [{a}, {b})" for a, b in plan.reserved if s.offset < b and a < end]
        if plan.region is not None and end > plan.region:
            clash.append(f"the end of the {plan.region}-byte region")
        if clash:
            raise TinyVisionError(f"{name}: on the {target}, scratch buffer {s.index} of op {s.op_index} "
                                  f"[{s.offset}, {end}) crosses {clash[0]}")
    return placed, head


def deployment_heads(plan, name=None):
    """(host head, board head) of a plan made for ``deployment_scratch``: each target's own scratch
    (``reference_scratch``, ``cmsis_nn_scratch``) placed by ``target_scratch``, which raises when one
    lands in a reserved range or beyond the plan's region."""
    name = name or plan.graph.name or "graph"
    _, host = target_scratch(plan, reference_scratch(plan.graph, name), "host", name)
    _, board = target_scratch(plan, cmsis_nn_scratch(plan.graph, name), "board", name)
    return host, board


def _scratch_requests(graph, scratch, name):
    requests = []
    for op in sorted(scratch):
        if not 0 <= op < len(graph.ops):
            raise TinyVisionError(f"{name}: scratch buffers given for op {op}, but the graph has {len(graph.ops)} ops")
        for index, size in enumerate(scratch[op]):
            if size > 0:
                requests.append((op, index, int(size)))
    return requests


def _choose_pairs(candidates, pinned, prefer_last):
    """At most one aliased input per op output; skip pairs whose pins disagree."""
    by_output = {}
    for c in candidates:
        by_output.setdefault(c.output, []).append(c)
    pairs, used = [], set()
    for options in by_output.values():
        for c in reversed(options) if prefer_last else options:
            if c.input in used:
                continue
            if c.input in pinned and c.output in pinned and pinned[c.input] != pinned[c.output]:
                continue
            pairs.append(c)
            used.add(c.input)
            break
    return pairs


def _groups(lifetimes, pairs):
    """Tensors that share one block: chains of in-place pairs, in order of first tensor.

    Returns one {tensor: byte position inside the block} per block; a pair's input sits
    ``shift`` bytes above its output, and the lowest member of a block is at 0.
    """
    position = {lt.tensor: (lt.tensor, 0) for lt in lifetimes}  # tensor -> (parent, offset from parent)

    def root(t):
        parent, at = position[t]
        if parent is t:
            return t, 0
        top, above = root(parent)
        position[t] = (top, at + above)
        return top, at + above

    for c in pairs:
        out_root, out_at = root(c.output)
        in_root, in_at = root(c.input)
        # place the output's block so that input = output + shift
        position[out_root] = (in_root, in_at - c.shift - out_at)
    groups = {}
    for lt in lifetimes:
        top, at = root(lt.tensor)
        groups.setdefault(top, {})[lt.tensor] = at
    result = []
    for members in groups.values():
        low = min(members.values())
        result.append({t: at - low for t, at in members.items()})
    return result
