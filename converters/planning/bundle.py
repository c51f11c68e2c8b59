"""The shared tensor arena of a patch bundle (docs/bundle-format.md, ``plan["arena"]``).

Layout, lowest address first::

    [ shared non-persistent region: every model's head, one model at a time ]
        with the stage buffers inside it: patch models plan around them, the tail's input sits on the last
    interpreters "resident":      [ persistent 0 ][ persistent 1 ] ...   (all interpreters alive)
    interpreters "one_at_a_time": [ persistent slot = max section ]     (each model's interpreter
        is created just before it runs, in the same slot: the persistent sections overlap)

In "one_at_a_time" mode an interpreter is created while stage buffers hold
the outputs of earlier patches, and TFLM's AllocateTensors puts its temporary
allocations at the bottom of the non-persistent buffer: each stage buffer is kept
above the temporaries of the models created while it holds data (``stage_floors``:
its own stage's, the next stage's, the tail's for the last); ``temp_reserve`` is
the largest model's (``allocation_temp_bytes``).

The patch models run one after another, stage by stage: a stage-k patch reads its
window from stage k - 1's buffer (the image for stage 0) and fills its box of stage
k's buffer; the tail runs last and reads the last stage as its input without a copy.
So each stage-k patch model is planned with the buffers of stages k - 1 and k as
``reserved`` ranges, and the tail with its input ``pinned`` at the last stage's
offset. A stage-k model that reads all of stage k - 1 and fills all of stage k
(``in_place``: a 1x1 stage, a segment of the tail) has its input and output pinned
on those buffers instead, and the runtime copies neither. The stage offsets are
chosen among a few layouts: those of ``converters.planning.stage_search`` (a search stage by stage
over what the models running beside each pair of stages need, planned quickly), and (``_stage_offset_candidates``:
stacked above every patch model's own plan, at the bottom, the last one where the
tail's unconstrained plan puts its input, consecutive stages side by side so that stage
k + 2 reuses stage k's memory; and ``_packed_offsets``: each stage first-fit above the
plans of the patches that fill it, so that a stage whose patches need little lies low
and later patches plan around it; ``_packed_from_top``: each stage as high as it goes under
the phases' lower bound plus a little slack, leaving the memory below in one piece); the
smallest shared region wins.
"""
import dataclasses
import itertools

import numpy as np

from converters.planning.check import check_plan
from converters.planning.lifetimes import ALIGNMENT, align_up, tensor_lifetimes
from converters.planning.packing import DEFAULT_EFFORT
from converters.planning.planner import plan_graph
from converters.planning.stage_search import search_stage_offsets
from tinyvision.errors import TinyVisionError

ROLES = ("patch", "tail")
# What TFLM's AllocateTensors writes at the bottom of the non-persistent buffer on a 32-bit
# target (micro_allocator.cc, greedy_memory_planner.cc; the device runtime checks it at Init):
# 12 B per scratch request (kept 12 requests ahead), per-op Prepare copies of the operands'
# TfLiteTensor (64 B, plus 16 + 4 B per scale when quantized; conv kernels take some twice),
# then 4 + 24 B AllocationInfo per tensor and request, and 40 B of planner arrays per buffer.
TEMP_TENSOR_BYTES = 64
TEMP_QUANT_BYTES, TEMP_SCALE_BYTES = 16, 4
TEMP_SCRATCH_BYTES, TEMP_SCRATCH_SLACK = 12, 12
TEMP_ALLOCATION_INFO_BYTES = 24
TEMP_PLANNER_BYTES = 40
TEMP_BIAS_ONCE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D"})  # input, filter, output twice; bias once
INTERPRETER_MODES = ("resident", "one_at_a_time")
ADJACENT_KEPT = 3  # layouts of consecutive stages side by side planned per bundle (best estimates first)
TOP_DOWN_SLACK = (0.0, 0.05, 0.1)  # top-down layouts under the phases' lower bound plus these fractions
STAGE_SEARCH_EFFORT = 1  # packing effort of the plans that rank layouts in the stage search (then planned in full)


@dataclasses.dataclass(eq=False)
class BundleLayout:
    """``arena``: the JSON-ready "arena" section; ``plans``: one checked ``MemoryPlan`` per model, in order."""

    arena: dict
    plans: list


def allocation_temp_bytes(graph):
    """Bytes TFLM's AllocateTensors may write from the bottom of the non-persistent buffer for
    ``graph`` on the 32-bit device (an upper bound: every op counted with one scratch request
    and REDUCE_MAX with two, every operand copied twice in Prepare but a convolution's bias, which
    CMSIS-NN's CONV_2D and DEPTHWISE_CONV_2D hold once: docs/bundle-format.md)."""
    def tensor_copy(t):
        q = t.quantization
        scales = 0 if q is None or q.scale is None else int(np.size(q.scale))
        return TEMP_TENSOR_BYTES + (TEMP_QUANT_BYTES + TEMP_SCALE_BYTES * scales if scales else 0)

    def held(op):
        operands = [t for t in op.inputs + op.outputs if t is not None]
        once = op.inputs[2] if op.opcode in TEMP_BIAS_ONCE and len(op.inputs) > 2 else None
        return sum((1 if t is once else 2) * tensor_copy(t) for t in operands)

    requests = len(graph.ops) + sum(op.opcode == "REDUCE_MAX" for op in graph.ops)
    scratch = TEMP_SCRATCH_BYTES * (requests + TEMP_SCRATCH_SLACK)
    prepare = max([held(op) for op in graph.ops], default=0)
    planning = (align_up(scratch + 4 + TEMP_ALLOCATION_INFO_BYTES * (len(graph.tensors) + requests))
                + TEMP_PLANNER_BYTES * (len(tensor_lifetimes(graph)) + requests))
    return align_up(max(scratch + prepare, planning))


def layout_bundle(models, persistent_bytes, stage_bytes, scratch=None, effort=DEFAULT_EFFORT,
                  interpreters="resident", patch_stages=None, in_place=(), order=None):
    """Lay out one arena for all models of a bundle and plan each model's head inside it.

    models: [(name, role, Graph)] in plan order; role "patch" or "tail" (at most one tail,
        whose single input is the last stage buffer).
    persistent_bytes: TFLM's tail (persistent) bytes per model, a list in model order or {name: bytes}.
    stage_bytes: bytes of each stage buffer, in stage order (an int for one stage); the last is
        the tail input's exact size.
    scratch: {name: {op index: [bytes, ...]}} kernel scratch requests of the target, per model.
    interpreters: "resident" (one persistent section per model, side by side) or "one_at_a_time"
        (all sections in one slot; the stages are kept above the models' AllocateTensors temporaries).
    patch_stages: {name: stage index} of the patch models (default: all stage 0). A stage-k patch
        model plans around the buffers of stage k - 1 (its source) and stage k (its destination).
    in_place: names of stage-k patch models that read the whole of their source stage and write the
        whole of stage k (alone in each fill of it): their input tensor is planned at the source's buffer
        and their output at stage k's, so the runtime copies neither.
    order: the patches in plan order, [(model name, stage, source stage or -1 for the image)], for an order
        other than patch_stages' (stages in ascending order, each reading the one before): which stages
        hold data where each model runs then comes from ``tinyvision.bundle.schedule.Schedule``.
    Returns a ``BundleLayout``; raises TinyVisionError if the inputs are inconsistent.
    """
    if not models:
        raise TinyVisionError("a bundle needs at least one model")
    names = [name for name, _, _ in models]
    if len(set(names)) != len(names):
        raise TinyVisionError("bundle model names must be unique")
    persistent = _persistent_list(names, persistent_bytes)
    scratch = scratch or {}
    tails = [i for i, (_, role, _) in enumerate(models) if role == "tail"]
    for name, role, _ in models:
        if role not in ROLES:
            raise TinyVisionError(f"bundle model {name!r} has role {role!r}, not one of {', '.join(ROLES)}")
    if len(tails) > 1:
        raise TinyVisionError(f"a bundle has one tail model, got {len(tails)}")
    if interpreters not in INTERPRETER_MODES:
        raise TinyVisionError(f"interpreters must be one of {', '.join(INTERPRETER_MODES)}, not {interpreters!r}")
    stage_bytes = [int(stage_bytes)] if np.ndim(stage_bytes) == 0 else [int(b) for b in stage_bytes]
    if not stage_bytes or min(stage_bytes) <= 0:
        raise TinyVisionError(f"stage buffer sizes must be positive, got {stage_bytes}")
    spans = [align_up(b) for b in stage_bytes]
    if order is not None:
        patch_stages = {name: k for name, k, _ in order}
    patch_stages = patch_stages or {}
    stage_of = {name: int(patch_stages.get(name, 0)) for name, role, _ in models if role == "patch"}
    if any(not 0 <= k < len(spans) for k in stage_of.values()):
        raise TinyVisionError(f"patch model stages {stage_of} are not all among the {len(spans)} stages")
    live, together, source_of = _stage_liveness(models, stage_of, len(spans), order)
    tail_input, tail_name = None, None
    if tails:
        name, _, graph = models[tails[0]]
        tail_name = name
        if len(graph.inputs) != 1:
            raise TinyVisionError(f"tail model {name!r} must have one input (the stage), has {len(graph.inputs)}")
        tail_input = graph.inputs[0]
        if tail_input.nbytes != stage_bytes[-1]:
            raise TinyVisionError(
                f"tail model {name!r} input is {tail_input.nbytes} bytes but the last stage buffer is "
                f"{stage_bytes[-1]}"
            )
        if tail_input not in {lt.tensor for lt in tensor_lifetimes(graph)}:
            raise TinyVisionError(f"tail model {name!r}: TFLM does not plan its input in the arena")
    stage_io = {name: _stage_io(name, graph, stage_of.get(name), source_of.get(name), stage_bytes)
                for name, role, graph in models if name in set(in_place)}

    def pins(name, offsets):
        if name not in stage_io:
            return {tail_input: offsets[-1]} if name == tail_name else {}
        source, destination = stage_io[name]
        return {source: offsets[source_of[name]], destination: offsets[stage_of[name]]}

    planned = {}  # (model index, reserved ranges, pinned offsets, effort) -> plan or the TinyVisionError it raised

    def plan_of(i, offsets, effort):
        name, _, graph = models[i]
        pinned = pins(name, offsets)
        owned = {stage_of[name], source_of[name]} if name in stage_io else {len(spans) - 1} if pinned else set()
        reserved = [(offsets[j], offsets[j] + spans[j]) for j in sorted(live[name] - owned)]
        key = (i, tuple(reserved), tuple(pinned.values()), effort)  # pins() lists its tensors in one order
        if key not in planned:
            try:
                planned[key] = plan_graph(graph, reserved=reserved, pinned=pinned, scratch=scratch.get(name),
                                          effort=effort, name=name)
            except TinyVisionError as e:
                planned[key] = e
        if isinstance(planned[key], TinyVisionError):
            raise planned[key]
        return planned[key]

    def plan_all(offsets):
        return [plan_of(i, offsets, effort) for i in range(len(models))]

    graphs = [graph for _, _, graph in models]
    reserve, creation = temp_reserve(graphs, interpreters), creation_floor(graphs, interpreters)

    def shared_of(offsets, plans):
        return align_up(max([p.footprint for p in plans] + [o + a for o, a in zip(offsets, spans)] + [creation]))

    floors = stage_floors([(graph, live[name]) for name, _, graph in models], len(spans), interpreters)
    free = [plan_graph(graph, scratch=scratch.get(name), effort=effort, name=name) for name, _, graph in models]
    top = align_up(max([p.size for (_, role, _), p in zip(models, free) if role == "patch"] + [0]))
    first = align_up(max([p.size for (name, role, _), p in zip(models, free)
                          if role == "patch" and stage_of[name] == 0] + [0]))
    pinned = free[tails[0]].offsets[tail_input] if tails else None
    best, failure = None, None

    def beside_stages(name, plan):  # bytes a patch model needs besides its stage buffers
        if name not in stage_io:
            return plan.size
        return max(0, plan.size - spans[source_of[name]] - spans[stage_of[name]])

    # a stage its patches fill by copying their outputs lies best above those models' own plans
    above_writers = [max([align_up(p.size) for (name, role, _), p in zip(models, free)
                          if role == "patch" and stage_of[name] == k and name not in stage_io] + [0])
                     for k in range(len(spans))]
    if together == {(k, k + 1) for k in range(len(spans) - 1)}:  # stage by stage
        phases = [((k - 1, k), align_up(max(beside_stages(name, p) for (name, role, _), p in zip(models, free)
                                            if role == "patch" and stage_of[name] == k)))
                  for k in sorted(set(stage_of.values()))]
        if tails:
            phases.append(((len(spans) - 1,), align_up(free[tails[0]].size) - spans[-1]))
        bound = max(sum(spans[k] for k in alive if k >= 0) + head for alive, head in phases)
        last_alive = [max(live[name]) for name in names]

        def need_through(k, offsets):  # the models whose last stage alive is k, planned quickly
            return max([max([plan_of(i, offsets, STAGE_SEARCH_EFFORT).footprint]
                            + [offsets[j] + spans[j] for j in live[names[i]]])
                        for i in range(len(models)) if last_alive[i] == k] + [0])

        candidates = search_stage_offsets(spans, floors, above_writers, bound, need_through)
        candidates += _stage_offset_candidates(spans, [top, 0], first, pinned, floors, phases)
        candidates += [_packed_offsets(spans, above_writers, floors, together, by_size) for by_size in (False, True)]
        candidates += [_packed_from_top(spans, align_up(bound * (1 + slack)), floors, together)
                       for slack in TOP_DOWN_SLACK]
    else:  # interleaved, stages refilled: place each where nothing alive at the same time is
        candidates = [_packed_offsets(spans, bases, floors, together, by_size)
                      for bases in ([0] * len(spans), [top] * len(spans), above_writers) for by_size in (False, True)]
    for offsets in _disjoint_where_alive(dict.fromkeys(candidates), spans, together):
        try:
            plans = plan_all(offsets)
        except TinyVisionError as e:
            failure = e
            continue
        shared = shared_of(offsets, plans)
        if best is None or shared < best[0]:
            best = (shared, offsets, plans)
    if best is None:
        raise TinyVisionError(f"no arena layout for the bundle: {failure}")
    shared, offsets, plans = best
    for (name, _, _), plan in zip(models, plans):
        plan.region = shared
        check_plan(plan, name=name)

    in_place_models = [i for i, name in enumerate(names) if name in stage_io]
    return BundleLayout(arena_section(shared, offsets, stage_bytes, persistent, interpreters, reserve,
                                      in_place_models, together), plans)


def _stage_liveness(models, stage_of, stage_count, order):
    """({model name: stages alive where it runs}, pairs of stages alive together, {patch model: source stage})."""
    from tinyvision.bundle.schedule import Schedule

    names = [name for name, _, _ in models]
    if order is None:  # stage by stage: stage k's patches read stage k - 1 and fill stage k; the tail reads the last
        source_of = {name: k - 1 for name, k in stage_of.items()}
        live = {name: frozenset(j for j in (k - 1, k) if j >= 0) for name, k in stage_of.items()}
        together = {(k, k + 1) for k in range(stage_count - 1)}
        alive_at_tail = frozenset({stage_count - 1})
    else:
        try:
            schedule = Schedule(stage_count, [(k, source) for _, k, source in order])
        except TinyVisionError as e:
            raise TinyVisionError(f"patch order: {e}") from None
        source_of = {name: source for name, _, source in order}
        live = {name: schedule.live_during([i for i, (n, _, _) in enumerate(order) if n == name])
                for name in stage_of}
        together = schedule.together()
        alive_at_tail = schedule.live_at(len(order))
    live.update({name: alive_at_tail for name in names if name not in stage_of})
    return live, together, source_of


def _packed_offsets(spans, bases, floors, together, by_size):
    """Stage offsets first-fit: each stage (in stage order, or largest first) at the lowest offset above its base
    and its floor where no stage alive at the same time already lies."""
    offsets = [None] * len(spans)
    for k in sorted(range(len(spans)), key=(lambda k: (-spans[k], k)) if by_size else None):
        taken = sorted((offsets[j], offsets[j] + spans[j]) for j in range(len(spans))
                       if offsets[j] is not None and (min(j, k), max(j, k)) in together)
        at = max(bases[k], floors[k])
        for lo, hi in taken:
            if at + spans[k] <= lo:
                break
            at = max(at, hi)
        offsets[k] = at
    return tuple(offsets)


def _packed_from_top(spans, ceiling, floors, together):
    """Stage offsets top-down: each stage (in stage order) as high as it goes with its end at or below
    ``ceiling`` where no stage alive at the same time lies (so the models that run between them have the
    memory below in one piece), and no lower than its floor."""
    offsets = [None] * len(spans)
    for k in range(len(spans)):
        taken = [(offsets[j], offsets[j] + spans[j]) for j in range(len(spans))
                 if offsets[j] is not None and (min(j, k), max(j, k)) in together]
        at = ceiling - spans[k]
        for lo, hi in sorted(taken, key=lambda r: -r[0]):
            if at < hi and lo < at + spans[k]:
                at = lo - spans[k]
        offsets[k] = max(at, floors[k])
    return tuple(offsets)


def _disjoint_where_alive(candidates, spans, together):
    """The candidate offset vectors whose stages alive together do not overlap."""
    return [c for c in candidates
            if all(c[a] + spans[a] <= c[b] or c[b] + spans[b] <= c[a] for a, b in together)]


def _stage_io(name, graph, stage, source, stage_bytes):
    """The (input, output) tensors of an in-place patch model, checked to be TFLM-planned whole stages."""
    if stage is None or source is None or source < 0:
        raise TinyVisionError(f"in-place model {name!r} must be a patch model reading a stage buffer")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1 or graph.inputs[0] is graph.outputs[0]:
        raise TinyVisionError(f"in-place model {name!r} must have one input and one other output")
    planned = {lt.tensor for lt in tensor_lifetimes(graph)}
    x, y = graph.inputs[0], graph.outputs[0]
    if x not in planned or y not in planned:
        raise TinyVisionError(f"in-place model {name!r}: TFLM does not plan its input and output in the arena")
    if (x.nbytes, y.nbytes) != (stage_bytes[source], stage_bytes[stage]):
        raise TinyVisionError(f"in-place model {name!r} does not read and write whole stage buffers")
    return x, y


def _stage_offset_candidates(spans, bases, first, pinned, floors, phases=()):
    """Stage offset vectors worth planning, best-first on ties: the stage buffers stacked (in stage
    order and reversed) from each base offset; each stage just above or just below the one before
    (only stages k and k + 1 are ever alive together, so stage k + 2 may take stage k's memory), all
    of them at the bottom or above the largest plan of one stage's patch models (which then have their
    memory in one piece; ``phases``: [(stages alive, bytes the models running then need besides them)]),
    the ADJACENT_KEPT of those each ``_layout_estimate`` finds smallest; stage 0 above its own patch
    models (``first``: their largest plan) with every later stage just below the one before (stage k's
    patches may use the memory of stage k + 1, not yet written); and the last stage where the tail's
    own plan puts its input with the others stacked above or below it. One stage: above every patch model's plan (top),
    at the bottom, at the tail's input (with the stage on top, TFLM's online scratch placement,
    first-fit from the bottom, cannot reach it in a patch model). Every stage k at or above ``floors[k]``
    (``stage_floors``)."""
    def stacked(base, order):
        offsets, at = [0] * len(spans), base
        for k in order:
            offsets[k] = max(at, floors[k])
            at = offsets[k] + spans[k]
        return tuple(offsets)

    def adjacent(base, ups):
        offsets = [0]
        for k, up in enumerate(ups, 1):
            offsets.append(offsets[-1] + spans[k - 1] if up else offsets[-1] - spans[k])
        low = max([base - min(offsets)] + [f - o for f, o in zip(floors, offsets)])
        return tuple(low + o for o in offsets)

    last = len(spans) - 1
    candidates = []
    for base in bases:
        candidates += [stacked(base, range(len(spans))), stacked(base, reversed(range(len(spans))))]
    bases = [0] + [head for alive, head in phases if len(alive) == 2]
    chained = {adjacent(base, ups) for base in bases for ups in itertools.product((True, False), repeat=last)}
    for split in (True, False):
        candidates += sorted(chained, key=lambda o: (_layout_estimate(o, spans, phases, split), o))[:ADJACENT_KEPT]
    descending = [max(first, floors[0])]
    for span in spans[1:]:
        descending.append(descending[-1] - span)
    candidates.append(tuple(descending))
    if pinned is not None:
        at = max(pinned, floors[last])
        above = stacked(at + spans[last], reversed(range(last)))
        candidates.append(above[:last] + (at,))
        if last:
            candidates.append(stacked(at - sum(spans[:last]), range(len(spans))))
    return [c for c in dict.fromkeys(candidates) if all(o >= f for o, f in zip(c, floors))]


def _layout_estimate(offsets, spans, phases, split):
    """A rough shared region for stage ``offsets``, only used to rank layouts before planning them:
    per phase, the end of the stages alive, plus what its models need beyond the largest gap below
    that end (``split``: their tensors fill that gap, then go above; else they all go above unless
    they fit in it: small tensors split well, large ones do not)."""
    need = 0
    for alive, head in phases:
        taken = sorted((offsets[k], offsets[k] + spans[k]) for k in alive if k >= 0)
        end, gap, at = taken[-1][1], 0, 0
        for lo, hi in taken:
            gap, at = max(gap, lo - at), max(at, hi)
        need = max(need, end + (max(0, head - gap) if split else head * (head > gap)))
    return need


def stage_floors(models, stage_count, interpreters):
    """Per stage buffer, the bytes at the bottom of the shared region it must stay above: in "one_at_a_time"
    mode the largest AllocateTensors temporaries of the models created while it holds data (for patches
    grouped by stage: the patch models of its stage and of the next, and the tail for the last stage), else 0
    (every interpreter is created before any stage is written). models: [(Graph, stages alive where it runs)]."""
    floors = [0] * stage_count
    if interpreters != "one_at_a_time":
        return floors
    for graph, alive in models:
        temp = allocation_temp_bytes(graph)
        for j in alive:
            floors[j] = max(floors[j], temp)
    return floors


def temp_reserve(graphs, interpreters):
    """Bytes at the bottom of the shared region the stage buffer must avoid: the largest model's
    AllocateTensors temporaries when interpreters are created one at a time, else 0."""
    return max(allocation_temp_bytes(g) for g in graphs) if interpreters == "one_at_a_time" else 0


def creation_floor(graphs, interpreters):
    """Bytes the shared region needs at least to create the interpreters: with "resident" interpreters the
    shared region is each model's whole non-persistent buffer, so the largest model's AllocateTensors
    temporaries must fit in it; "one_at_a_time" creation also has the persistent slot's free bytes above."""
    return max(allocation_temp_bytes(g) for g in graphs) if interpreters == "resident" else 0


def arena_section(shared, stage_offsets, stage_bytes, persistent, interpreters, reserve, in_place=(), together=None):
    """The checked ``plan["arena"]`` dict: the shared region at 0, the persistent sections above it
    (side by side for "resident", all in one slot for "one_at_a_time"), the stage buffers inside it;
    ``in_place``: the models whose input and output are their stage buffers (the key only when some are)."""
    sections, offset = [], shared
    for i, size in enumerate(persistent):
        sections.append({"model": i, "offset": offset, "size": size})
        if interpreters == "resident":
            offset = align_up(offset + size)
    if interpreters == "one_at_a_time":
        offset = align_up(offset + max(persistent))
    arena = {
        "size": offset,
        "interpreters": interpreters,
        "shared": {"offset": 0, "size": shared},
        "stages": [{"offset": int(o), "size": int(b)} for o, b in zip(stage_offsets, stage_bytes)],
        "persistent": sections,
    }
    if interpreters == "one_at_a_time":
        arena["temp_reserve"] = reserve
    if in_place:
        arena["in_place"] = sorted(int(i) for i in in_place)
    check_arena(arena, len(persistent), together)
    return arena


def persistent_span(arena):
    """Bytes of the arena above the shared region: every persistent section, or the one slot they share."""
    return arena["size"] - (arena["shared"]["offset"] + arena["shared"]["size"])


def check_arena(arena, model_count, together=None):
    """Raise TinyVisionError unless the arena section is consistent (alignment, containment, disjointness).

    together: the pairs of stages alive at the same time (``tinyvision.bundle.schedule.Schedule.together``),
    whose buffers must not overlap; default: consecutive stages (patches grouped by stage)."""
    shared, stages = arena["shared"], arena["stages"]
    mode = arena.get("interpreters", "resident")
    if mode not in INTERPRETER_MODES:
        raise TinyVisionError(f"arena: unknown interpreters mode {mode!r}")
    if not stages and arena.get("offline_plans", True):  # a whole model's arena: its input is copied in
        raise TinyVisionError("arena: no stage sections (a whole model's arena has offline_plans false)")
    if min([shared["offset"], shared["size"]] + [s["size"] for s in stages]) < 0:
        raise TinyVisionError("arena: negative offset or size")
    if shared["offset"] % ALIGNMENT or any(s["offset"] % ALIGNMENT for s in stages):
        raise TinyVisionError("arena: shared region and stages must start on 16-byte boundaries")
    shared_end = shared["offset"] + shared["size"]
    for k, stage in enumerate(stages):
        if not (shared["offset"] <= stage["offset"] and stage["offset"] + stage["size"] <= shared_end):
            raise TinyVisionError(f"arena: the stage {k} buffer is not inside the shared region")
    pairs = [(k, k + 1) for k in range(len(stages) - 1)] if together is None else sorted(together)
    for j, k in pairs:
        a, b = stages[j], stages[k]
        if a["offset"] < b["offset"] + b["size"] and b["offset"] < a["offset"] + a["size"]:
            raise TinyVisionError(f"arena: the buffers of stages {j} and {k} overlap (both hold data at once)")
    in_place = arena.get("in_place", [])
    if sorted(set(in_place)) != list(in_place) or not all(0 <= i < model_count for i in in_place):
        raise TinyVisionError("arena: in_place must list model indices in ascending order, each once")
    if in_place and not arena.get("offline_plans", True):
        raise TinyVisionError("arena: in_place needs offline plans (they put those models' tensors on the stages)")
    if sorted(s["model"] for s in arena["persistent"]) != list(range(model_count)):
        raise TinyVisionError("arena: there must be one persistent section per model")
    ranges = []
    for s in arena["persistent"]:
        if s["offset"] % ALIGNMENT or s["size"] < 0:
            raise TinyVisionError(f"arena: persistent section of model {s['model']} is misaligned or negative")
        if s["offset"] < shared_end and shared["offset"] < s["offset"] + s["size"]:
            raise TinyVisionError(f"arena: shared region and persistent section of model {s['model']} overlap")
        if s["offset"] + s["size"] > arena["size"]:
            raise TinyVisionError(f"arena: persistent section of model {s['model']} ends beyond the arena "
                                  f"size {arena['size']}")
        ranges.append((s["offset"], s["offset"] + s["size"], f"persistent section of model {s['model']}"))
    if shared_end > arena["size"]:
        raise TinyVisionError(f"arena: the shared region ends beyond the arena size {arena['size']}")
    if mode == "resident":  # all interpreters are alive at once: their sections must not overlap
        ranges.sort()
        for (_, end, a), (start, _, b) in zip(ranges, ranges[1:]):
            if start < end:
                raise TinyVisionError(f"arena: {a} and {b} overlap")


def _persistent_list(names, persistent_bytes):
    if isinstance(persistent_bytes, dict):
        missing = [n for n in names if n not in persistent_bytes]
        if missing:
            raise TinyVisionError(f"no persistent byte count for bundle model(s) {', '.join(map(repr, missing))}")
        values = [persistent_bytes[n] for n in names]
    else:
        values = list(persistent_bytes)
        if len(values) != len(names):
            raise TinyVisionError(f"{len(values)} persistent byte counts for {len(names)} bundle models")
    if any(int(v) < 0 for v in values):
        raise TinyVisionError("persistent byte counts must be non-negative")
    return [int(v) for v in values]
