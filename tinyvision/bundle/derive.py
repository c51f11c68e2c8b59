"""Re-derive every figure of a bundle plan that its model files determine, and compare.

The plan is not believed: a bundle read from disk has each model measured on TFLM
(non-persistent and persistent bytes, all models in one subprocess), its MACs and
flash recounted, ``temp_reserve`` recomputed, each model's own offline plan checked
against the arena (no overlap, stage buffers kept free, the tail's input exactly at
the last stage, the host's and the board's kernel scratch outside the stages and
inside the shared region), and the whole arena section rebuilt from those figures.
The first disagreement is one TinyVisionError naming the field and both values.
"""
import hashlib

from tinyvision.errors import TinyVisionError

# sha256 of a model's bytes -> (non-persistent, persistent) bytes on TFLM: the same bytes measure the same.
_MEASURED = {}


def measure(bundle):
    """Set every model's ``nonpersistent_bytes`` / ``persistent_bytes`` from TFLM (one subprocess for all)."""
    for m, figures in zip(bundle.models, tflm_figures([(m.file, m.data) for m in bundle.models])):
        m.nonpersistent_bytes, m.persistent_bytes = figures


def tflm_figures(named_models):
    """[(non-persistent, persistent) bytes] of (name, .tflite bytes) pairs on TFLM, measuring each new model
    once per process, all of them in one subprocess."""
    from tinyvision.runtime import tflm

    keys = [hashlib.sha256(data).digest() for _, data in named_models]
    missing = {key: model for key, model in zip(keys, named_models) if key not in _MEASURED}
    if missing:
        for key, report in zip(missing, tflm.measure_many(list(missing.values()))):
            _MEASURED[key] = (int(report.head_bytes), int(report.tail_bytes))
    return [_MEASURED[key] for key in keys]


def unplanned_arena(bundle, interpreters):
    """The arena of models without offline plans (each TFLM plans itself from offset 0).

    Patch models use the bottom of the shared region, the stage buffers lie stacked above
    every patch model's head, and the tail (whose own plan puts its input somewhere
    in its head) needs the last stage copied into its input: ``offline_plans`` false.
    """
    from converters.planning import align_up, arena_section, creation_floor, temp_reserve

    patch_head = max(align_up(m.nonpersistent_bytes) for m in bundle.models if m.role == "patch")
    graphs = [m.graph() for m in bundle.models]
    reserve = temp_reserve(graphs, interpreters)
    offsets, at = [], max(patch_head, reserve)
    for size in bundle.stage_bytes:
        offsets.append(at)
        at += align_up(size)
    shared = max(at, align_up(bundle.models[bundle.tail].nonpersistent_bytes), creation_floor(graphs, interpreters))
    arena = arena_section(shared, offsets, bundle.stage_bytes, [m.persistent_bytes for m in bundle.models],
                          interpreters, reserve)
    arena["offline_plans"] = False
    return arena


def whole_model_arena(bundle):
    """The arena of a measured whole_model bundle: the model's head on the host or on the board
    (CMSIS-NN scratch placed around its own offline plan, ``tinyvision.analysis.memory``), whichever
    is larger, then its persistent section. Its input is not planned at a stage: the runtime copies
    the image into it (``offline_plans`` false)."""
    from converters.planning import align_up, check_arena
    from tinyvision.analysis.memory import memory_profile

    (model,) = bundle.models
    board_head = memory_profile(model.data, model.file, kernels="cmsis_nn").head_bytes
    shared = align_up(max(model.nonpersistent_bytes, board_head))
    persistent = align_up(model.persistent_bytes)
    arena = {"size": shared + persistent, "interpreters": "resident", "shared": {"offset": 0, "size": shared},
             "stages": [], "persistent": [{"model": 0, "offset": shared, "size": persistent}], "offline_plans": False}
    check_arena(arena, 1)
    return arena


def check_derived(bundle, where):
    """Raise TinyVisionError at the first figure of ``bundle``'s plan its model files contradict."""
    def fail(message):
        raise TinyVisionError(f"{where}: {message}")

    _check_costs(bundle, fail)
    _check_stage_floors(bundle, fail)
    planned = _check_offline_plans(bundle, fail)
    _compare(bundle.arena, _expected_arena(bundle, planned), "arena", fail)
    for i, (m, (head, tail)) in enumerate(zip(bundle.models, tflm_figures([(m.file, m.data)
                                                                            for m in bundle.models]))):
        for field, claimed, measured in (("nonpersistent_bytes", m.nonpersistent_bytes, head),
                                         ("persistent_bytes", m.persistent_bytes, tail)):
            if claimed != measured:
                fail(f"models[{i}].{field} is {claimed}, but TFLM measures {measured} B for {m.file}")


def _check_costs(bundle, fail):
    """Per-model MACs, and the stats' MACs, MAC overhead and flash."""
    from converters.export.flash_image import image_size
    from tinyvision.analysis.cost import model_cost

    for i, m in enumerate(bundle.models):
        macs = int(model_cost(m.model()).macs)
        if m.macs != macs:
            fail(f"models[{i}].macs is {m.macs}, but {m.file} has {macs} MACs")
    runs = [p.model for p in bundle.patches] + [bundle.tail]
    derived = {"macs": sum(bundle.models[i].macs for i in runs),
               "flash_bytes": image_size([m.data for m in bundle.models])}
    baseline = (bundle.stats.get("baseline") or {}).get("macs")
    if baseline is not None:
        derived["mac_overhead"] = round(derived["macs"] / baseline - 1, 6) if baseline else 0.0
    elif "mac_overhead" in bundle.stats:
        fail("stats.mac_overhead is given without the stats.baseline.macs it is relative to")
    for field, value in derived.items():
        if field in bundle.stats and bundle.stats[field] != value:
            fail(f"stats.{field} is {bundle.stats[field]}, but the model files give {value}")


def _check_stage_floors(bundle, fail):
    """Each stage buffer above what creating the models that run while it holds data may write."""
    from converters.planning import stage_floors

    floors = stage_floors([(m.graph(), bundle.live_stages(i)) for i, m in enumerate(bundle.models)],
                          len(bundle.stages), bundle.arena.get("interpreters", "resident"))
    for k, (section, floor) in enumerate(zip(bundle.arena["stages"], floors)):
        if section["offset"] - bundle.arena["shared"]["offset"] < floor:
            fail(f"arena.stages[{k}].offset is {section['offset']}, inside the {floor} B at the bottom of the shared "
                 "region that creating the models run while it holds data may write")


def _check_offline_plans(bundle, fail):
    """Each model's OfflineMemoryAllocation against the arena; returns per model the bytes of the shared region
    its plan occupies and whether it plans its input and output on its stage buffers (None when the models
    carry no plans)."""
    from converters.planning import METADATA_NAME

    carried = [METADATA_NAME in m.model().metadata for m in bundle.models]
    claimed = bundle.arena.get("offline_plans", True)
    if not bundle.stages:  # a whole model keeps its own plan, if it has one; the image is copied into its input
        if claimed:
            fail("arena.offline_plans is true, but a whole_model bundle has no stage to plan its input at")
        if carried[0]:
            _check_model_plan(bundle, 0, fail)
        return None
    if any(carried) and not all(carried):
        fail(f"only some models carry an offline plan ({', '.join(m.file for m, c in zip(bundle.models, carried) if c)})")
    if claimed != all(carried):
        fail(f"arena.offline_plans is {str(claimed).lower()}, but the models {'do' if all(carried) else 'do not'} "
             "carry offline plans")
    if not claimed:
        return None
    return [_check_model_plan(bundle, i, fail) for i in range(len(bundle.models))]


def _check_model_plan(bundle, i, fail):
    """Model ``i``'s offline plan is a valid TFLM plan inside the shared region that keeps the stage buffers
    its stage does not own free (the tail reads its input at the last stage; a model that may run in place
    either keeps them free or has its input and output exactly on them), with the kernel scratch of the host
    and of the board placed outside them. Returns the bytes it occupies with the scratch of both kernel sets,
    as the converter planned it (``deployment_scratch``), and whether it runs in place."""
    from converters.planning import (MemoryPlan, align_up, check_plan, deployment_heads, deployment_scratch,
                                     in_place_candidates, read_offline_plan, target_scratch, tensor_lifetimes)

    m, arena = bundle.models[i], bundle.arena
    model = m.model()
    graph = model.main
    try:
        offsets = read_offline_plan(model, m.file)
        stage_pins = _stage_pins(bundle, i, graph, offsets) if m.role == "patch" else {}
        lifetimes = tensor_lifetimes(graph)
        stages = [(s["offset"], s["offset"] + align_up(s["size"])) for s in arena["stages"]]
        if m.role == "tail":
            owned, pinned = {len(stages) - 1}, ({graph.inputs[0]: arena["stages"][-1]["offset"]} if stages else {})
        elif stage_pins:
            p = next(p for p in bundle.patches if p.model == i)
            owned, pinned = {p.reads, p.stage}, stage_pins
        else:
            owned, pinned = set(), {}
        reserved = tuple(stages[j] for j in sorted(bundle.live_stages(i) - owned))
        pairs = [c for c in in_place_candidates(graph, lifetimes)
                 if c.input in offsets and c.output in offsets and offsets[c.input] - offsets[c.output] == c.shift]
        ends = [offsets[lt.tensor] + lt.size for lt in lifetimes if lt.tensor in offsets]
        plan = MemoryPlan(graph, lifetimes, offsets, pairs, [], tuple(sorted(reserved)), pinned,
                          arena["shared"]["size"], max(ends, default=0), 0, 0, "read from the model")
        check_plan(plan, name=m.file)
        deployment_heads(plan, m.file)
        _, head = target_scratch(plan, deployment_scratch(graph, m.file), "host and the board", m.file)
    except TinyVisionError as e:
        fail(f"models[{i}]'s offline plan does not fit the arena: {e}")
    return max(head, plan.size), bool(stage_pins)


def _stage_pins(bundle, i, graph, offsets):
    """{input: offset, output: offset} when model ``i`` may run in place and its plan puts its input on its
    source stage's buffer and its output on its stage's; else {}."""
    if i not in bundle.whole_stage_models():
        return {}
    p = next(p for p in bundle.patches if p.model == i)
    stages = bundle.arena["stages"]
    pins = {graph.inputs[0]: stages[p.reads]["offset"], graph.outputs[0]: stages[p.stage]["offset"]}
    return pins if all(offsets.get(t) == at for t, at in pins.items()) else {}


def _expected_arena(bundle, planned):
    """The arena section the figures give: with offline plans, rebuilt around the plan's stage offsets (checked
    against the models' plans above) and the region those plans occupy; derived entirely otherwise."""
    from converters.planning import align_up, arena_section, creation_floor, temp_reserve

    arena = bundle.arena
    mode = arena.get("interpreters", "resident")
    if not bundle.stages:
        expected = whole_model_arena(bundle)
    elif planned is None:
        expected = unplanned_arena(bundle, mode)
    else:
        graphs = [m.graph() for m in bundle.models]
        reserve = temp_reserve(graphs, mode)
        offsets = [s["offset"] for s in arena["stages"]]
        occupied = [size for size, _ in planned] + [creation_floor(graphs, mode)]
        shared = align_up(max(occupied + [o + align_up(b) for o, b in zip(offsets, bundle.stage_bytes)]))
        in_place = [i for i, (_, on_stages) in enumerate(planned) if on_stages]
        expected = arena_section(shared, offsets, bundle.stage_bytes, [m.persistent_bytes for m in bundle.models],
                                 mode, reserve, in_place, bundle.schedule().together())
        expected["offline_plans"] = True
    expected["interpreters"] = mode
    if "unplanned_reason" in arena:
        expected["unplanned_reason"] = arena["unplanned_reason"]
    if "offline_plans" not in arena:
        expected.pop("offline_plans")
    if "interpreters" not in arena:
        expected.pop("interpreters")
    return expected


def _compare(claimed, derived, path, fail):
    """Fail at the first leaf where ``claimed`` (the plan) and ``derived`` differ, naming both values."""
    if isinstance(derived, dict) and isinstance(claimed, dict):
        for key in sorted(set(derived) | set(claimed)):
            _compare(claimed.get(key), derived.get(key), f"{path}.{key}", fail)
    elif isinstance(derived, list) and isinstance(claimed, list) and len(derived) == len(claimed):
        for k, (a, b) in enumerate(zip(claimed, derived)):
            _compare(a, b, f"{path}[{k}]", fail)
    elif claimed != derived:
        fail(f"{path} is {_short(claimed)}, but the model files give {_short(derived)}")


def _short(value):
    text = "absent" if value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

