"""Building a patch bundle (docs/bundle-format.md): measure, lay out the shared arena, write the folder.

The format itself (the bundle in memory, its validation, re-derivation and folder I/O)
is ``tinyvision.bundle``; this module adds what only the converter does: ``finalize``
measures every model on TFLM and plans the arena (offline plans embedded in the
models when the planner can), ``write_bundle`` finalizes, validates and writes.
"""
from converters.export.flash_image import image_size
from tinyvision.bundle import measure, unplanned_arena, validate, whole_model_arena, write_folder
from tinyvision.bundle.document import ALIGN
from tinyvision.errors import TinyVisionError

DEFAULT_INTERPRETERS = "one_at_a_time"

__all__ = ["ALIGN", "DEFAULT_INTERPRETERS", "finalize", "merge_identical_models", "write_bundle"]


def finalize(bundle, offline_plans=True, interpreters=DEFAULT_INTERPRETERS):
    """Plan the shared arena and measure every model on TFLM (one subprocess per measurement round).

    offline_plans: plan every model's head into one shared arena with ``converters.planning``
    (stage buffer reserved in patch models, pinned as the tail's input) and embed the plans as
    TFLM OfflineMemoryAllocation metadata; when the planner cannot (or False), keep TFLM's own
    plans and use ``unplanned_arena``. ``nonpersistent_bytes`` / ``persistent_bytes`` are TFLM's
    head / tail for the models as written. interpreters: "one_at_a_time" (default) creates each
    model's interpreter just before it runs, in one persistent slot, and orders the patches by
    model so each is created once per inference; "resident" keeps all interpreters alive (one
    persistent section each: more SRAM, no re-creation). Does nothing for a bundle that has an
    arena already.
    """
    if bundle.arena is not None and bundle.measured:
        return bundle
    merge_identical_models(bundle)
    if interpreters == "one_at_a_time" and not bundle.schedule().interleaved():
        bundle.patches.sort(key=lambda p: (p.stage, p.model))  # stable: keeps each model's patches in order
    measure(bundle)
    if not bundle.stages:
        bundle.arena = whole_model_arena(bundle)
        return bundle
    reason = "disabled" if not offline_plans else None
    if offline_plans:
        try:
            bundle.arena = _plan_offline(bundle, interpreters)
        except TinyVisionError as e:
            reason = str(e)
        else:
            bundle.stats["flash_bytes"] = image_size([m.data for m in bundle.models])  # with the plans' metadata
            measure(bundle)  # heads (and persistent data) of the planned models
            persistent = [s["size"] for s in sorted(bundle.arena["persistent"], key=lambda s: s["model"])]
            if persistent != [m.persistent_bytes for m in bundle.models]:
                bundle.arena = _plan_offline(bundle, interpreters)
    if reason is not None:
        bundle.arena = unplanned_arena(bundle, interpreters)
        bundle.arena["unplanned_reason"] = reason
    return bundle


def merge_identical_models(bundle):
    """Keep one model file per distinct bytes: patches of a model whose bytes an earlier model of the same
    stage has run that one instead (flash holds each model once). Returns the number of models dropped."""
    stage_of = {p.model: (p.stage, p.reads) for p in bundle.patches}
    first, keep = {}, []
    for i, m in enumerate(bundle.models):
        key = (m.role, stage_of.get(i), m.data)
        if key not in first:
            first[key] = len(keep)
            keep.append(m)
    if len(keep) == len(bundle.models):
        return 0
    index = [first[(m.role, stage_of.get(i), m.data)] for i, m in enumerate(bundle.models)]
    for p in bundle.patches:
        p.model = index[p.model]
    dropped = len(bundle.models) - len(keep)
    bundle.tail, bundle.models = index[bundle.tail], keep
    return dropped


def _plan_offline(bundle, interpreters):
    """Arena section from ``converters.planning.layout_bundle``; rewrites every model's bytes with its plan."""
    from converters.ir import Model
    from converters.planning import deployment_heads, deployment_scratch, layout_bundle, write_offline_plan

    models = [Model.from_bytes(m.data, m.file) for m in bundle.models]
    for model in models:
        model.metadata.pop("OfflineMemoryAllocation", None)
    layout = layout_bundle(
        [(m.name, m.role, model.main) for m, model in zip(bundle.models, models)],
        [m.persistent_bytes for m in bundle.models],
        bundle.stage_bytes,
        scratch={m.name: deployment_scratch(model.main, m.name) for m, model in zip(bundle.models, models)},
        interpreters=interpreters,
        in_place=[bundle.models[i].name for i in bundle.whole_stage_models()],
        order=[(bundle.models[p.model].name, p.stage, p.reads) for p in bundle.patches],
    )
    for m, plan in zip(bundle.models, layout.plans):
        deployment_heads(plan, m.name)  # raises if the host's or the board's scratch would touch a stage
    planned = [write_offline_plan(model, plan, m.file).to_bytes()
               for m, model, plan in zip(bundle.models, models, layout.plans)]
    for m, data in zip(bundle.models, planned):  # only once every model has its plan
        m.data, m.parsed = data, None
    arena = dict(layout.arena)
    arena["offline_plans"] = True
    return arena


def write_bundle(bundle, folder):
    """Finalize ``bundle`` (if not done), validate it and write it as ``folder`` atomically; returns the path."""
    finalize(bundle)
    validate(bundle)
    return write_folder(bundle, folder)
