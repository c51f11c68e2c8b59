"""The patch bundle (docs/bundle-format.md): in-memory form, validation, atomic folder I/O.

A ``Bundle`` holds the model bytes and the plan; ``plan()`` is the JSON of
``plan.json``. ``write_bundle`` measures every model on TFLM (head/tail) and lays
out the shared arena if that was not done yet, validates, and writes the folder
atomically; ``read_bundle`` loads one and validates the plan against the models.

Shapes in the plan are HWC without the batch dimension; a rank-2 model tensor
``(1, C)`` (a pooled tunnel output, a head's input) is ``[1, 1, C]``.
"""
import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.fileio import replace_folder

FORMAT = "tinyvision.bundle/2"
KINDS = ("patch_stage", "tunnels", "whole_model")  # whole_model: no patch stage, the tail reads the image
PLAN_FILE = "plan.json"
ALIGN = 16
DEFAULT_INTERPRETERS = "one_at_a_time"


def hwc(shape):
    """``(1, H, W, C)`` -> (H, W, C); ``(1, C)`` -> (1, 1, C)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (2, 4) or shape[0] != 1:
        raise TinyVisionError(f"tensor shape {shape} is neither (1, H, W, C) nor (1, C)")
    return shape[1:] if len(shape) == 4 else (1, 1, shape[1])


def quant_dict(tensor):
    q = tensor.quantization
    if q is None or q.per_channel:
        raise TinyVisionError(f"tensor {tensor.name!r} has no per-tensor quantization")
    return {"scale": float(q.scale.reshape(-1)[0]), "zero_point": int(q.zero_point.reshape(-1)[0])}


@dataclasses.dataclass
class Window:
    """Region of a patch's source (the image, or the previous stage's buffer) copied into a model input (pixels)."""

    x: int
    y: int
    w: int
    h: int


@dataclasses.dataclass
class Box:
    """Region of the stage buffer a model output fills: ``h x w`` pixels, ``channels`` from channel ``c``."""

    x: int
    y: int
    c: int
    w: int
    h: int
    channels: int


@dataclasses.dataclass
class Patch:
    model: int
    window: Window
    output: Box
    stage: int = 0  # the stage whose buffer ``output`` is in; stage k > 0 reads ``window`` from stage k - 1


@dataclasses.dataclass
class BundleModel:
    name: str
    role: str  # "patch" or "tail"
    data: bytes
    input_shape: tuple  # HWC
    output_shape: tuple  # HWC
    macs: int = 0
    nonpersistent_bytes: int = None  # TFLM head
    persistent_bytes: int = None  # TFLM tail
    # the parsed form of ``data`` when the bundle was just built (saves re-parsing it); never written
    parsed: object = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, name, role, data, model):
        from tinyvision.analysis.cost import model_cost

        g = model.main
        return cls(name, role, bytes(data), hwc(g.inputs[0].shape), hwc(g.outputs[0].shape),
                   macs=int(model_cost(model).macs), parsed=model)

    def graph(self):
        """The model's main ``converters.ir`` graph."""
        from converters.ir import Model

        if self.parsed is None:
            self.parsed = Model.from_bytes(self.data, self.file)
        return self.parsed.main

    @property
    def file(self):
        return f"{self.name}.tflite"


@dataclasses.dataclass
class Bundle:
    kind: str
    source: dict
    image: dict  # shape (HWC), dtype, scale, zero_point
    stages: list  # the same for each stage buffer, in execution order; the tail reads the last
    models: list
    patches: list
    tail: int
    arena: dict = None
    stats: dict = dataclasses.field(default_factory=dict)

    @property
    def last_stage(self):
        """The stage buffer the tail reads."""
        return self.stages[-1]

    def source_of(self, stage):
        """What the patches of ``stage`` read their windows from: the image or the previous stage's buffer."""
        return self.image if stage == 0 else self.stages[stage - 1]

    @property
    def stage_bytes(self):
        """Bytes of each stage buffer, in stage order."""
        return [int(np.prod(s["shape"])) for s in self.stages]

    @property
    def measured(self):
        return all(m.nonpersistent_bytes is not None and m.persistent_bytes is not None for m in self.models)

    def plan(self):
        """The ``plan.json`` document."""
        return {
            "format": FORMAT,
            "kind": self.kind,
            "source": self.source,
            "image": self.image,
            "stages": self.stages,
            "models": [
                {"name": m.name, "file": m.file, "role": m.role, "input_shape": list(m.input_shape),
                 "output_shape": list(m.output_shape), "nonpersistent_bytes": m.nonpersistent_bytes,
                 "persistent_bytes": m.persistent_bytes, "macs": m.macs}
                for m in self.models
            ],
            "patches": [{"model": p.model, "stage": p.stage, "window": dataclasses.asdict(p.window),
                         "output": dataclasses.asdict(p.output)} for p in self.patches],
            "tail": {"model": self.tail},
            "arena": self.arena,
            "stats": self.stats,
        }

    @classmethod
    def from_plan(cls, plan, model_bytes):
        """A Bundle from a parsed plan and the bytes of its model files (in plan order)."""
        try:
            models = [
                BundleModel(m["name"], m["role"], model_bytes[i], tuple(m["input_shape"]), tuple(m["output_shape"]),
                            int(m.get("macs", 0)), m.get("nonpersistent_bytes"), m.get("persistent_bytes"))
                for i, m in enumerate(plan["models"])
            ]
            patches = [Patch(int(p["model"]), Window(**p["window"]), Box(**p["output"]), int(p["stage"]))
                       for p in plan["patches"]]
            return cls(plan["kind"], plan["source"], plan["image"], list(plan["stages"]), models, patches,
                       int(plan["tail"]["model"]), plan.get("arena"), plan.get("stats", {}))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise TinyVisionError(f"malformed bundle plan: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------- validation


def _inside(x, y, w, h, width, height):
    return w > 0 and h > 0 and 0 <= x and 0 <= y and x + w <= width and y + h <= height


def _quant_of(tensor):
    q = tensor.quantization
    if q is None:
        return None
    return float(q.scale.reshape(-1)[0]), int(q.zero_point.reshape(-1)[0])


def _buffer(spec):
    """(shape HWC, (scale, zero point)) of an image or stage buffer description."""
    return tuple(int(d) for d in spec["shape"]), (float(spec["scale"]), int(spec["zero_point"]))


def validate(bundle, where="bundle"):
    """Check the plan against itself and against its models; TinyVisionError naming the first problem."""
    from converters.ir import Model

    def fail(message):
        raise TinyVisionError(f"{where}: {message}")

    if bundle.kind not in KINDS:
        fail(f"unknown kind {bundle.kind!r} (expected one of {KINDS})")
    if bundle.kind == "whole_model":
        if bundle.stages or bundle.patches or len(bundle.models) != 1:
            fail("a whole_model bundle has one model (its tail), no stages and no patches")
    elif not bundle.stages:
        fail("no stages")
    sources = [_buffer(bundle.source_of(k)) for k in range(len(bundle.stages))]
    stages = [_buffer(s) for s in bundle.stages]
    names = [m.name for m in bundle.models]
    if len(set(names)) != len(names):
        fail(f"duplicate model names {names}")
    if not 0 <= bundle.tail < len(bundle.models) or bundle.models[bundle.tail].role != "tail":
        fail(f"tail model index {bundle.tail} is not a model with role 'tail'")
    stage_of = {}
    for k, p in enumerate(bundle.patches):
        if not 0 <= p.stage < len(bundle.stages):
            fail(f"patch {k} fills stage {p.stage}, but there are {len(bundle.stages)} stages")
        if k and p.stage < bundle.patches[k - 1].stage:
            fail(f"patch {k} (stage {p.stage}) runs after a patch of stage {bundle.patches[k - 1].stage}")
        if not 0 <= p.model < len(bundle.models) or bundle.models[p.model].role != "patch":
            fail(f"patch {k} runs model {p.model}, which is not a patch model")
        if stage_of.setdefault(p.model, p.stage) != p.stage:
            fail(f"model {bundle.models[p.model].name!r} serves stages {stage_of[p.model]} and {p.stage}")
    for i, m in enumerate(bundle.models):
        if m.role not in ("patch", "tail"):
            fail(f"model {m.name!r} has unknown role {m.role!r}")
        if m.role == "tail" and i != bundle.tail:
            fail(f"model {m.name!r} has role 'tail' but the tail is model {bundle.tail}")
        graph = Model.from_bytes(m.data, m.file).main
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            fail(f"{m.file} must have one input and one output")
        x, y = graph.inputs[0], graph.outputs[0]
        if np.dtype(x.dtype) != np.int8 or np.dtype(y.dtype) != np.int8:
            fail(f"{m.file} must take and produce int8")
        if hwc(x.shape) != tuple(m.input_shape) or hwc(y.shape) != tuple(m.output_shape):
            fail(f"{m.file} is {hwc(x.shape)} -> {hwc(y.shape)}, the plan says {tuple(m.input_shape)} -> "
                 f"{tuple(m.output_shape)}")
        if m.role == "patch":
            if i not in stage_of:
                fail(f"patch model {m.file} is not used by any patch")
            k = stage_of[i]
            source = "the image" if k == 0 else f"stage {k - 1}"
            if _quant_of(x) != sources[k][1]:
                fail(f"{m.file} input quantization {_quant_of(x)} is not that of {source} {sources[k][1]}")
            if _quant_of(y) != stages[k][1]:
                fail(f"{m.file} output quantization {_quant_of(y)} is not stage {k}'s {stages[k][1]}")
        else:
            read, what = (stages[-1], "the last stage buffer") if stages else (_buffer(bundle.image), "the image")
            if tuple(m.input_shape) != read[0]:
                fail(f"tail {m.file} reads {tuple(m.input_shape)}, {what} is {read[0]}")
            if _quant_of(x) != read[1]:
                fail(f"tail {m.file} input quantization {_quant_of(x)} is not that of {what} {read[1]}")
    covered = [np.zeros(shape, dtype=np.int32) for shape, _ in stages]
    for k, p in enumerate(bundle.patches):
        m = bundle.models[p.model]
        (H, W, C), (Hs, Ws, Cs) = sources[p.stage][0], stages[p.stage][0]
        source = "image" if p.stage == 0 else f"stage {p.stage - 1} buffer"
        w, o = p.window, p.output
        if not _inside(w.x, w.y, w.w, w.h, W, H):
            fail(f"patch {k} window {dataclasses.asdict(w)} is not inside the {H}x{W} {source}")
        if (w.h, w.w, C) != tuple(m.input_shape):
            fail(f"patch {k} window {w.h}x{w.w}x{C} does not match {m.file} input {tuple(m.input_shape)}")
        if not _inside(o.x, o.y, o.w, o.h, Ws, Hs) or o.c < 0 or o.channels < 1 or o.c + o.channels > Cs:
            fail(f"patch {k} output box {dataclasses.asdict(o)} is not inside the stage {p.stage} buffer "
                 f"{(Hs, Ws, Cs)}")
        if (o.h, o.w, o.channels) != tuple(m.output_shape):
            fail(f"patch {k} output box {o.h}x{o.w}x{o.channels} does not match {m.file} output "
                 f"{tuple(m.output_shape)}")
        covered[p.stage][o.y:o.y + o.h, o.x:o.x + o.w, o.c:o.c + o.channels] += 1
    for k, cover in enumerate(covered):
        if (cover != 1).any():
            fail(f"the patch outputs of stage {k} cover {int((cover == 0).sum())} of its values never and "
                 f"{int((cover > 1).sum())} more than once")
    if bundle.arena is not None:
        _validate_arena(bundle, fail)


def _validate_arena(bundle, fail):
    from converters.planning import check_arena

    a = bundle.arena
    try:
        check_arena(a, len(bundle.models))
        sections = a["stages"]
    except (KeyError, TypeError) as e:
        fail(f"malformed arena section ({type(e).__name__}: {e})")
    except TinyVisionError as e:
        fail(str(e))
    if len(sections) != len(bundle.stages):
        fail(f"the arena has {len(sections)} stage sections for {len(bundle.stages)} stages")
    for k, (section, size) in enumerate(zip(sections, bundle.stage_bytes)):
        if section["size"] < size:
            fail(f"the arena's section for stage {k} ({section['size']} B) is smaller than its buffer ({size} B)")


# ---------------------------------------------------------------- memory figures and arena


def _align(n):
    return -(-int(n) // ALIGN) * ALIGN


def unplanned_arena(bundle, interpreters=DEFAULT_INTERPRETERS):
    """An arena layout for models without offline plans (each TFLM plans itself from offset 0).

    Patch models use the bottom of the shared region, the stage buffers lie stacked above
    every patch model's head, and the tail (whose own plan puts its input somewhere
    in its head) needs the last stage copied into its input: ``offline_plans`` false.
    """
    from converters.ir import Model
    from converters.planning import arena_section, temp_reserve

    patch_head = max(_align(m.nonpersistent_bytes) for m in bundle.models if m.role == "patch")
    reserve = temp_reserve([Model.from_bytes(m.data, m.file).main for m in bundle.models], interpreters)
    sizes = bundle.stage_bytes
    offsets, at = [], max(patch_head, reserve)
    for size in sizes:
        offsets.append(at)
        at += _align(size)
    shared = max(at, _align(bundle.models[bundle.tail].nonpersistent_bytes))
    persistent = [_align(m.persistent_bytes) for m in bundle.models]
    arena = arena_section(shared, offsets, sizes, persistent, interpreters, reserve)
    arena["offline_plans"] = False
    return arena


def _measure(bundle):
    from tinyvision.runtime.patch_runner import measure_models

    for m, report in zip(bundle.models, measure_models([m.data for m in bundle.models])):
        m.nonpersistent_bytes, m.persistent_bytes = int(report.head_bytes), int(report.tail_bytes)


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
    if interpreters == "one_at_a_time":
        bundle.patches.sort(key=lambda p: (p.stage, p.model))  # stable: keeps each model's patches in order
    _measure(bundle)
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
            bundle.stats["flash_bytes"] = sum(len(m.data) for m in bundle.models)  # with the plans' metadata
            _measure(bundle)  # heads (and persistent data) of the planned models
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
    stage_of = {p.model: p.stage for p in bundle.patches}
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


def whole_model_arena(bundle):
    """The arena of a measured whole_model bundle: the model's head on the host or on the board
    (CMSIS-NN scratch placed around its own offline plan, ``tinyvision.analysis.memory``), whichever
    is larger, then its persistent section. Its input is not planned at a stage: the runtime copies
    the image into it (``offline_plans`` false)."""
    from converters.planning import check_arena
    from tinyvision.analysis.memory import memory_profile

    (model,) = bundle.models
    board_head = memory_profile(model.data, model.file, kernels="cmsis_nn").head_bytes
    shared = _align(max(model.nonpersistent_bytes, board_head))
    persistent = _align(model.persistent_bytes)
    arena = {"size": shared + persistent, "interpreters": "resident", "shared": {"offset": 0, "size": shared},
             "stages": [], "persistent": [{"model": 0, "offset": shared, "size": persistent}], "offline_plans": False}
    check_arena(arena, 1)
    return arena


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
        patch_stages={bundle.models[p.model].name: p.stage for p in bundle.patches},
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


# ---------------------------------------------------------------- folder I/O


def write_bundle(bundle, folder):
    """Write ``bundle`` as ``folder`` (plan.json + one .tflite per model), atomically.

    Everything is written into a temporary folder next to ``folder`` and renamed
    into place; an existing bundle folder is replaced, any other existing path is
    refused. Returns the folder path.
    """
    finalize(bundle)
    validate(bundle)
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    if os.path.exists(folder) and not os.path.isfile(os.path.join(folder, PLAN_FILE)):
        if not os.path.isdir(folder) or os.listdir(folder):
            raise TinyVisionError(f"{folder} exists and is not a bundle: refusing to replace it")
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.tmp-")
    except OSError as e:
        raise TinyVisionError(f"cannot write {folder}: {e.strerror or e}") from None
    try:
        for m in bundle.models:
            with open(os.path.join(tmp, m.file), "wb") as f:
                f.write(m.data)
        with open(os.path.join(tmp, PLAN_FILE), "w", encoding="utf-8") as f:
            json.dump(bundle.plan(), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o755)
        replace_folder(tmp, folder)
    except OSError as e:
        raise TinyVisionError(f"cannot write {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_bundle(folder):
    """Load and validate a bundle folder; TinyVisionError when it is missing, malformed or inconsistent."""
    from tinyvision.fileio import read_tflite_bytes

    folder = os.fspath(folder)
    path = os.path.join(folder, PLAN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except OSError as e:
        raise TinyVisionError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise TinyVisionError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise TinyVisionError(f"{path} is not a {FORMAT} plan")
    try:
        files = [m["file"] for m in plan["models"]]
    except (KeyError, TypeError):
        raise TinyVisionError(f"{path}: malformed 'models' list") from None
    for name in files:
        if os.path.basename(name) != name:
            raise TinyVisionError(f"{path}: model file {name!r} is not inside the bundle")
    data = [read_tflite_bytes(os.path.join(folder, name)) for name in files]
    bundle = Bundle.from_plan(plan, data)
    for m, name in zip(bundle.models, files):
        if m.file != name:
            raise TinyVisionError(f"{path}: model {m.name!r} must be stored as {m.file}, not {name}")
    validate(bundle, where=folder)
    return bundle
