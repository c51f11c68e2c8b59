"""The patch bundle in memory (docs/bundle-format.md): ``Bundle`` and its parts, and the plan's own consistency.

A ``Bundle`` holds the model bytes and the plan; ``plan()`` is the JSON of ``plan.json``
and ``Bundle.from_plan`` builds one from a plan whose fields ``tinyvision.bundle.schema``
has checked. ``validate`` checks the plan against itself and its models' graphs
(shapes, dtypes, quantization, windows and boxes, the arena's geometry);
``tinyvision.bundle.derive`` then compares every figure the model files determine.

Shapes in the plan are HWC without the batch dimension; a rank-2 model tensor
``(1, C)`` (a pooled tunnel output, a head's input) is ``[1, 1, C]``, a rank-3 output ``(1, N, C)`` (a detector's
anchors) ``[1, N, C]``.
"""
import dataclasses

import numpy as np

from tinyvision.bundle.schedule import IMAGE, Schedule
from tinyvision.bundle.schema import FORMAT, KINDS, MAX_OUTPUTS
from tinyvision.data.normalization import NORMALIZATION, input_normalization
from tinyvision.errors import TinyVisionError

ALIGN = 16


def hwc(shape):
    """``(1, H, W, C)`` -> (H, W, C); ``(1, N, C)`` -> (1, N, C) (a detector's N anchors of C values each);
    ``(1, C)`` -> (1, 1, C)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (2, 3, 4) or shape[0] != 1:
        raise TinyVisionError(f"tensor shape {shape} is neither (1, H, W, C), (1, N, C) nor (1, C)")
    return (1,) * (4 - len(shape)) + shape[1:]


def quant_dict(tensor):
    q = tensor.quantization
    if q is None or q.per_channel:
        raise TinyVisionError(f"tensor {tensor.name!r} has no per-tensor quantization")
    return {"scale": float(q.scale.reshape(-1)[0]), "zero_point": int(q.zero_point.reshape(-1)[0])}


@dataclasses.dataclass
class Window:
    """Region of a patch's source (the image, or a stage buffer) copied into a model input (pixels)."""

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
    stage: int = 0  # the stage whose buffer ``output`` is in
    source: int = None  # the stage ``window`` is read from (IMAGE: the image); None: the stage before ``stage``

    @property
    def reads(self):
        """The stage whose buffer ``window`` is in, or IMAGE."""
        return self.stage - 1 if self.source is None else self.source


@dataclasses.dataclass
class BundleModel:
    name: str
    role: str  # "patch" or "tail"
    data: bytes
    input_shape: tuple  # HWC
    output_shapes: tuple  # HWC of each output, in the model's output order: one, or several for a tail
    macs: int = 0
    nonpersistent_bytes: int = None  # TFLM head
    persistent_bytes: int = None  # TFLM tail
    # the parsed form of ``data`` when the bundle was just built (saves re-parsing it); never written
    parsed: object = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, name, role, data, model):
        from tinyvision.analysis.cost import model_cost

        g = model.main
        return cls(name, role, bytes(data), hwc(g.inputs[0].shape), tuple(hwc(y.shape) for y in g.outputs),
                   macs=int(model_cost(model).macs), parsed=model)

    @property
    def output_shape(self):
        """HWC of the model's one output (TinyVisionError for a tail with several: read ``output_shapes``)."""
        if len(self.output_shapes) != 1:
            raise TinyVisionError(f"{self.file} has {len(self.output_shapes)} outputs, not one")
        return self.output_shapes[0]

    def model(self):
        """The parsed ``converters.ir.Model`` of ``data`` (parsed once; reset ``parsed`` when ``data`` changes)."""
        from converters.ir import Model

        if self.parsed is None:
            self.parsed = Model.from_bytes(self.data, self.file)
        return self.parsed

    def graph(self):
        """The model's main ``converters.ir`` graph."""
        return self.model().main

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
    labels: list = dataclasses.field(default_factory=list)  # class names of the tail's outputs, when known
    box_coding: dict = None  # a box detector's BoxCoding.to_dict(): what decodes the tail's output into boxes
    normalization: tuple = None  # (mean, std) of the source's pixels -> input, when not tinyvision's own

    @property
    def pixel_normalization(self):
        """(mean, std): pixel p is the image value (p - mean) / std, before ``image``'s quantization."""
        return self.normalization or NORMALIZATION

    def take_normalization(self, stored):
        """Record the source model's pixel normalization: ``stored`` (its metadata's) or, for a model without one,
        ``input_normalization``'s convention for ``image``'s quantization; tinyvision's own stays out of the plan."""
        normalization = input_normalization(stored, self.image["scale"], self.image["zero_point"])
        self.normalization = None if normalization == NORMALIZATION else normalization

    @property
    def last_stage(self):
        """The stage buffer the tail reads."""
        return self.stages[-1]

    def source_of(self, patch):
        """What ``patch`` reads its window from: the image or a stage buffer description."""
        return self.image if patch.reads == IMAGE else self.stages[patch.reads]

    def schedule(self):
        """The ``Schedule`` of the stage buffers (TinyVisionError for an order no runtime can follow)."""
        return Schedule(len(self.stages), [(p.stage, p.reads) for p in self.patches])

    def live_stages(self, model):
        """The stages live wherever ``model`` (an index) runs: at its patches, or at the tail's position."""
        schedule = self.schedule()
        if model == self.tail:
            return schedule.live_at(len(self.patches))
        return schedule.live_during([i for i, p in enumerate(self.patches) if p.model == model])

    @property
    def stage_bytes(self):
        """Bytes of each stage buffer, in stage order."""
        return [int(np.prod(s["shape"])) for s in self.stages]

    def whole_stage_models(self):
        """Indices of the models that can run in place: every patch of the model reads the whole of a stage
        buffer and fills the whole of its own (alone in its fill: a segment of a chain, or of a tunnel)."""
        whole = {}
        for p in self.patches:
            (H, W, _), (h, w, c) = self.source_of(p)["shape"], self.stages[p.stage]["shape"]
            whole[p.model] = whole.get(p.model, True) and (
                p.reads != IMAGE and dataclasses.astuple(p.window) == (0, 0, W, H)
                and dataclasses.astuple(p.output) == (0, 0, 0, w, h, c))
        return sorted(m for m, ok in whole.items() if ok)

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
                 **output_shapes_entry(m.output_shapes), "nonpersistent_bytes": m.nonpersistent_bytes,
                 "persistent_bytes": m.persistent_bytes, "macs": m.macs}
                for m in self.models
            ],
            "patches": [{"model": p.model, "stage": p.stage, **({} if p.source is None else {"source": p.source}),
                         "window": dataclasses.asdict(p.window), "output": dataclasses.asdict(p.output)}
                        for p in self.patches],
            "tail": {"model": self.tail},
            "arena": self.arena,
            "stats": self.stats,
            **({"labels": list(self.labels)} if self.labels else {}),
            **({"box_coding": self.box_coding} if self.box_coding else {}),
            **({"normalization": {"mean": self.normalization[0], "std": self.normalization[1]}}
               if self.normalization else {}),
        }

    @classmethod
    def from_plan(cls, plan, model_bytes):
        """A Bundle from a plan that passed ``schema.check_plan_fields`` and its model files' bytes (plan order)."""
        models = [
            BundleModel(m["name"], m["role"], data, tuple(m["input_shape"]), _output_shapes_of(m),
                        m["macs"], m["nonpersistent_bytes"], m["persistent_bytes"])
            for m, data in zip(plan["models"], model_bytes)
        ]
        patches = [Patch(p["model"], Window(**p["window"]), Box(**p["output"]), p["stage"], p.get("source"))
                   for p in plan["patches"]]
        return cls(plan["kind"], plan["source"], plan["image"], list(plan["stages"]), models, patches,
                   plan["tail"]["model"], plan.get("arena"), plan.get("stats") or {},
                   list(plan.get("labels") or []), plan.get("box_coding"),
                   (plan["normalization"]["mean"], plan["normalization"]["std"]) if plan.get("normalization") else None)


def output_shapes_entry(shapes):
    """A plan model's output field: ``output_shape`` for one output, ``output_shapes`` for several."""
    if len(shapes) == 1:
        return {"output_shape": list(shapes[0])}
    return {"output_shapes": [list(s) for s in shapes]}


def _output_shapes_of(entry):
    """The HWC output shapes of a plan model entry (its ``output_shape`` or its ``output_shapes``)."""
    if entry.get("output_shapes") is not None:
        return tuple(tuple(s) for s in entry["output_shapes"])
    return (tuple(entry["output_shape"]),)


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

    def fail(message):
        raise TinyVisionError(f"{where}: {message}")

    if bundle.kind not in KINDS:
        fail(f"unknown kind {bundle.kind!r} (expected one of {KINDS})")
    if bundle.kind == "whole_model":
        if bundle.stages or bundle.patches or len(bundle.models) != 1:
            fail("a whole_model bundle has one model (its tail), no stages and no patches")
    elif not bundle.stages:
        fail("no stages")
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
        if not IMAGE <= p.reads < p.stage:
            fail(f"patch {k} of stage {p.stage} reads stage {p.reads}: a patch reads the image or an earlier stage")
        if not 0 <= p.model < len(bundle.models) or bundle.models[p.model].role != "patch":
            fail(f"patch {k} runs model {p.model}, which is not a patch model")
        if stage_of.setdefault(p.model, (p.stage, p.reads)) != (p.stage, p.reads):
            fail(f"model {bundle.models[p.model].name!r} serves stage {stage_of[p.model][0]} from "
                 f"{_source_name(stage_of[p.model][1])} and stage {p.stage} from {_source_name(p.reads)}")
    try:
        schedule = bundle.schedule()
    except TinyVisionError as e:
        fail(str(e))
    for i, m in enumerate(bundle.models):
        if m.role not in ("patch", "tail"):
            fail(f"model {m.name!r} has unknown role {m.role!r}")
        if m.role == "tail" and i != bundle.tail:
            fail(f"model {m.name!r} has role 'tail' but the tail is model {bundle.tail}")
        graph = m.graph()
        if len(graph.inputs) != 1 or not graph.outputs or (m.role == "patch" and len(graph.outputs) != 1):
            fail(f"{m.file} must have one input and " + ("one output" if m.role == "patch" else "outputs"))
        if len(graph.outputs) > MAX_OUTPUTS:
            fail(f"{m.file} has {len(graph.outputs)} outputs, at most {MAX_OUTPUTS} are supported")
        x, y = graph.inputs[0], graph.outputs[0]
        if any(np.dtype(t.dtype) != np.int8 for t in (x, *graph.outputs)):
            fail(f"{m.file} must take and produce int8")
        shapes = tuple(hwc(t.shape) for t in graph.outputs)
        if hwc(x.shape) != tuple(m.input_shape) or shapes != tuple(m.output_shapes):
            fail(f"{m.file} is {hwc(x.shape)} -> {_shapes_text(shapes)}, the plan says {tuple(m.input_shape)} -> "
                 f"{_shapes_text(m.output_shapes)}")
        if m.role == "patch":
            if i not in stage_of:
                fail(f"patch model {m.file} is not used by any patch")
            k, reads = stage_of[i]
            source = _buffer(bundle.image if reads == IMAGE else bundle.stages[reads])
            if _quant_of(x) != source[1]:
                fail(f"{m.file} input quantization {_quant_of(x)} is not that of {_source_name(reads)} {source[1]}")
            if _quant_of(y) != stages[k][1]:
                fail(f"{m.file} output quantization {_quant_of(y)} is not stage {k}'s {stages[k][1]}")
        else:
            read, what = (stages[-1], "the last stage buffer") if stages else (_buffer(bundle.image), "the image")
            if tuple(m.input_shape) != read[0]:
                fail(f"tail {m.file} reads {tuple(m.input_shape)}, {what} is {read[0]}")
            if _quant_of(x) != read[1]:
                fail(f"tail {m.file} input quantization {_quant_of(x)} is not that of {what} {read[1]}")
    for k, p in enumerate(bundle.patches):
        m = bundle.models[p.model]
        (H, W, C), (Hs, Ws, Cs) = _buffer(bundle.source_of(p))[0], stages[p.stage][0]
        source = "image" if p.reads == IMAGE else f"stage {p.reads} buffer"
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
    for fill in schedule.fills:
        _check_cover(fill.stage, stages[fill.stage][0], [bundle.patches[i].output for i in fill.writes], fail)
    if bundle.arena is not None:
        _validate_arena(bundle, schedule, fail)


def _source_name(reads):
    return "the image" if reads == IMAGE else f"stage {reads}"


def _shapes_text(shapes):
    return " + ".join(str(tuple(s)) for s in shapes)


def _check_cover(stage, shape, boxes, fail):
    """Boxes (each inside the buffer) of one fill cover the stage buffer exactly once: pairwise disjoint, volumes
    add up.
    Counted without allocating the buffer, whose size the plan only claims."""
    for i, a in enumerate(boxes):
        for b in boxes[:i]:
            if _boxes_overlap(a, b):
                fail(f"the patch outputs {dataclasses.asdict(b)} and {dataclasses.asdict(a)} of stage {stage} "
                     "overlap")
    covered, size = sum(o.h * o.w * o.channels for o in boxes), int(np.prod(shape))
    if covered != size:
        fail(f"the patch outputs of stage {stage} cover {covered:,} of its {size:,} values")


def _boxes_overlap(a, b):
    return (a.y < b.y + b.h and b.y < a.y + a.h and a.x < b.x + b.w and b.x < a.x + a.w
            and a.c < b.c + b.channels and b.c < a.c + a.channels)


def _validate_arena(bundle, schedule, fail):
    from converters.planning import check_arena

    a = bundle.arena
    try:
        check_arena(a, len(bundle.models), schedule.together())
    except TinyVisionError as e:
        fail(str(e))
    outside = sorted(set(a.get("in_place", [])) - set(bundle.whole_stage_models()))
    if outside:
        fail(f"arena.in_place lists model {outside[0]}, which does not read and fill whole stage buffers alone")
    sections = a["stages"]
    if len(sections) != len(bundle.stages):
        fail(f"the arena has {len(sections)} stage sections for {len(bundle.stages)} stages")
    for k, (section, size) in enumerate(zip(sections, bundle.stage_bytes)):
        if section["size"] < size:
            fail(f"the arena's section for stage {k} ({section['size']} B) is smaller than its buffer ({size} B)")
