"""The shared tensor arena of a patch bundle (docs/bundle-format.md, ``plan["arena"]``).

Layout, lowest address first::

    [ shared non-persistent region: every model's head, one model at a time ]
        with the stage buffer inside it: patch models plan around it, the tail's input sits on it
    [ persistent section of model 0 ][ persistent section of model 1 ] ...   (16-byte aligned)

The patch models run one after another and fill the stage buffer; the tail runs
last and reads the stage as its input without a copy. So each patch model is
planned with the stage as a ``reserved`` range, and the tail with its input
``pinned`` at the stage offset. The stage offset is chosen among: above every
patch model's own plan (top), at 0 (bottom), and where the tail's unconstrained
plan puts its input; the one with the smallest shared region wins (ties in that
order: with the stage on top, TFLM's online scratch placement, first-fit from
the bottom, cannot reach it in a patch model).
"""
import dataclasses

from converters.planning.check import check_plan
from converters.planning.lifetimes import ALIGNMENT, align_up, tensor_lifetimes
from converters.planning.packing import DEFAULT_EFFORT
from converters.planning.planner import plan_graph
from tinyvision.errors import TinyVisionError

ROLES = ("patch", "tail")


@dataclasses.dataclass(eq=False)
class BundleLayout:
    """``arena``: the JSON-ready "arena" section; ``plans``: one checked ``MemoryPlan`` per model, in order."""

    arena: dict
    plans: list


def layout_bundle(models, persistent_bytes, stage_bytes, scratch=None, effort=DEFAULT_EFFORT):
    """Lay out one arena for all models of a bundle and plan each model's head inside it.

    models: [(name, role, Graph)] in plan order; role "patch" or "tail" (at most one tail,
        whose single input is the stage buffer).
    persistent_bytes: TFLM's tail (persistent) bytes per model, a list in model order or {name: bytes}.
    stage_bytes: bytes of the stage buffer (the tail input's exact size).
    scratch: {name: {op index: [bytes, ...]}} kernel scratch requests of the target, per model.
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
    if stage_bytes <= 0:
        raise TinyVisionError(f"stage buffer size must be positive, got {stage_bytes}")
    stage_span = align_up(stage_bytes)
    tail_input = None
    if tails:
        name, _, graph = models[tails[0]]
        if len(graph.inputs) != 1:
            raise TinyVisionError(f"tail model {name!r} must have one input (the stage), has {len(graph.inputs)}")
        tail_input = graph.inputs[0]
        if tail_input.nbytes != stage_bytes:
            raise TinyVisionError(
                f"tail model {name!r} input is {tail_input.nbytes} bytes but the stage buffer is {stage_bytes}"
            )
        if tail_input not in {lt.tensor for lt in tensor_lifetimes(graph)}:
            raise TinyVisionError(f"tail model {name!r}: TFLM does not plan its input in the arena")

    def plan_all(stage_offset):
        plans = []
        for name, role, graph in models:
            if role == "tail":
                plans.append(plan_graph(graph, pinned={tail_input: stage_offset}, scratch=scratch.get(name),
                                        effort=effort, name=name))
            else:
                plans.append(plan_graph(graph, reserved=[(stage_offset, stage_offset + stage_span)],
                                        scratch=scratch.get(name), effort=effort, name=name))
        return plans

    free = [plan_graph(graph, scratch=scratch.get(name), effort=effort, name=name) for name, _, graph in models]
    candidates = [align_up(max([p.size for (_, role, _), p in zip(models, free) if role == "patch"] + [0])), 0]
    if tails:
        candidates.append(free[tails[0]].offsets[tail_input])
    best, failure = None, None
    for stage_offset in dict.fromkeys(candidates):
        try:
            plans = plan_all(stage_offset)
        except TinyVisionError as e:
            failure = e
            continue
        shared = align_up(max([p.footprint for p in plans] + [stage_offset + stage_span]))
        if best is None or shared < best[0]:
            best = (shared, stage_offset, plans)
    if best is None:
        raise TinyVisionError(f"no arena layout for the bundle: {failure}")
    shared, stage_offset, plans = best
    for (name, _, _), plan in zip(models, plans):
        plan.region = shared
        check_plan(plan, name=name)

    sections, offset = [], shared
    for i, size in enumerate(persistent):
        sections.append({"model": i, "offset": offset, "size": size})
        offset = align_up(offset + size)
    arena = {
        "size": offset,
        "shared": {"offset": 0, "size": shared},
        "stage": {"offset": stage_offset, "size": stage_bytes},
        "persistent": sections,
    }
    check_arena(arena, len(models))
    return BundleLayout(arena, plans)


def check_arena(arena, model_count):
    """Raise TinyVisionError unless the arena section is consistent (alignment, containment, disjointness)."""
    shared, stage = arena["shared"], arena["stage"]
    if shared["offset"] % ALIGNMENT or stage["offset"] % ALIGNMENT:
        raise TinyVisionError("arena: shared region and stage must start on 16-byte boundaries")
    shared_end = shared["offset"] + shared["size"]
    if not (shared["offset"] <= stage["offset"] and stage["offset"] + stage["size"] <= shared_end):
        raise TinyVisionError("arena: the stage buffer is not inside the shared region")
    ranges = [(shared["offset"], shared["offset"] + shared["size"], "shared region")]
    if sorted(s["model"] for s in arena["persistent"]) != list(range(model_count)):
        raise TinyVisionError("arena: there must be one persistent section per model")
    for s in arena["persistent"]:
        if s["offset"] % ALIGNMENT or s["size"] < 0:
            raise TinyVisionError(f"arena: persistent section of model {s['model']} is misaligned or negative")
        ranges.append((s["offset"], s["offset"] + s["size"], f"persistent section of model {s['model']}"))
    ranges.sort()
    for (_, end, a), (start, _, b) in zip(ranges, ranges[1:]):
        if start < end:
            raise TinyVisionError(f"arena: {a} and {b} overlap")
    if ranges[-1][1] > arena["size"]:
        raise TinyVisionError(f"arena: {ranges[-1][2]} ends beyond the arena size {arena['size']}")


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
