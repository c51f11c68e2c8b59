"""Every field of ``plan.json`` with its JSON type and range, checked before anything is built from it.

``check_plan_fields(plan)`` walks ``PLAN`` and raises one TinyVisionError naming the field
path (``patches[3].window.x``) and the value: a window ``x`` of 0.5, ``true`` or ``"3"``
is not an integer; a size beyond what any board could hold is refused here, before
numpy allocates a stage buffer from it. A field added to the format (an image dtype,
a layout) is one entry below. Keys the table does not name are ignored.
"""
import math

from converters.ir.validate import MAX_TENSOR_BYTES
from tinyvision.errors import TinyVisionError

FORMAT = "tinyvision.bundle/2"
KINDS = ("patch_stage", "tunnels", "whole_model")  # whole_model: no patch stage, the tail reads the image
ROLES = ("patch", "tail")
INTERPRETER_MODES = ("resident", "one_at_a_time")
IMAGE_DTYPES = ("int8",)
# Arena bytes, offsets and flash far beyond any microcontroller, well inside a 32-bit offset.
MAX_BYTES = 1 << 30
MAX_DIMENSION = 1 << 16
MAX_ITEMS = 1 << 16  # models, patches, stages
MAX_OUTPUTS = 8  # outputs of a tail (tflm_app's TINYVISION_MAX_OUTPUTS)
MAX_NORMALIZATION = 1e6  # |mean| and std of a pixel normalization: far beyond the 0..255 pixels


class Int:
    """A JSON integer (not a bool, not a float) in [low, high]."""

    def __init__(self, low=0, high=MAX_BYTES):
        self.low, self.high = low, high

    def check(self, value, path):
        if type(value) is not int:
            _fail(path, value, "an integer")
        if not self.low <= value <= self.high:
            _fail(path, value, f"an integer in [{self.low:,}, {self.high:,}]")


class Float:
    """A finite JSON number (int or float, not a bool) in [low, high]."""

    def __init__(self, low=-math.inf, high=math.inf, exclusive_low=False):
        self.low, self.high, self.exclusive_low = low, high, exclusive_low

    def check(self, value, path):
        if type(value) not in (int, float) or not math.isfinite(value):
            _fail(path, value, "a finite number")
        if value < self.low or value > self.high or (self.exclusive_low and value == self.low):
            _fail(path, value, f"a number in {'(' if self.exclusive_low else '['}{self.low}, {self.high}]")


class Str:
    """A JSON string, one of ``choices`` when given."""

    def __init__(self, choices=None):
        self.choices = choices

    def check(self, value, path):
        if type(value) is not str:
            _fail(path, value, "a string")
        if self.choices is not None and value not in self.choices:
            _fail(path, value, f"one of {', '.join(map(repr, self.choices))}")


class Bool:
    def check(self, value, path):
        if type(value) is not bool:
            _fail(path, value, "true or false")


class Shape:
    """[H, W, C]: positive integers whose int8 buffer fits ``MAX_TENSOR_BYTES``."""

    def check(self, value, path):
        List(Int(1, MAX_DIMENSION), 3, 3).check(value, path)
        if math.prod(value) > MAX_TENSOR_BYTES:
            _fail(path, value, f"a shape of at most {MAX_TENSOR_BYTES:,} values")


class List:
    def __init__(self, item, low=0, high=MAX_ITEMS):
        self.item, self.low, self.high = item, low, high

    def check(self, value, path):
        if type(value) is not list:
            _fail(path, value, "a list")
        if not self.low <= len(value) <= self.high:
            _fail(path, f"{len(value)} entries", f"a list of {self.low} to {self.high} entries")
        for i, entry in enumerate(value):
            self.item.check(entry, f"{path}[{i}]")


class Obj:
    """A JSON object with the given fields; ``optional`` names those that may be absent (or null)."""

    def __init__(self, fields, optional=()):
        self.fields, self.optional = fields, set(optional)

    def check(self, value, path):
        if type(value) is not dict:
            _fail(path, value, "an object")
        for key, spec in self.fields.items():
            where = f"{path}.{key}" if path else key
            if value.get(key) is None:
                if key in self.optional:
                    continue
                raise TinyVisionError(f"{where} is missing")
            spec.check(value[key], where)


def _fail(path, value, expected):
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise TinyVisionError(f"{path} is {shown}, expected {expected}")


_QUANTIZED = {"shape": Shape(), "dtype": Str(IMAGE_DTYPES), "scale": Float(0, exclusive_low=True),
              "zero_point": Int(-128, 127)}
_DEQUANTIZED = Obj({"dtype": Str(("float32",)), "scale": Float(0, exclusive_low=True), "zero_point": Int(-128, 127)})
_SECTION = Obj({"offset": Int(), "size": Int()})
PLAN = Obj({
    "format": Str((FORMAT,)),
    "kind": Str(KINDS),
    "source": Obj({
        "file": Str(), "sha256": Str(),
        "path": Str(),  # the source as convert read it, relative to the bundle folder
        # what the source model does at its edges instead of the bundle (converters/patching/edges.py)
        "input": Obj({"shape": List(Int(1, MAX_DIMENSION), 1, 4), "dtype": Str(("int8", "float32")),
                      "layout": Str(("NHWC", "NCHW"))}),
        "output": _DEQUANTIZED,
        "outputs": List(_DEQUANTIZED, 2, MAX_OUTPUTS),  # one per output of a source with several
    }, optional=("sha256", "path", "input", "output", "outputs")),
    "image": Obj(_QUANTIZED),
    "stages": List(Obj({**_QUANTIZED, "tensor": Str()}, optional=("tensor",))),  # none in a whole_model bundle
    "models": List(Obj({
        "name": Str(), "file": Str(), "role": Str(ROLES), "input_shape": Shape(), "output_shape": Shape(),
        "output_shapes": List(Shape(), 2, MAX_OUTPUTS),  # in place of output_shape: a tail with several outputs
        "nonpersistent_bytes": Int(), "persistent_bytes": Int(), "macs": Int(0, 1 << 50),
    }, optional=("output_shape", "output_shapes")), 1),
    "patches": List(Obj({
        "model": Int(0, MAX_ITEMS), "stage": Int(0, MAX_ITEMS),
        "source": Int(-1, MAX_ITEMS),  # -1: the image; absent: the stage before (the image for stage 0)
        "window": Obj({"x": Int(0, MAX_DIMENSION), "y": Int(0, MAX_DIMENSION),
                       "w": Int(1, MAX_DIMENSION), "h": Int(1, MAX_DIMENSION)}),
        "output": Obj({"x": Int(0, MAX_DIMENSION), "y": Int(0, MAX_DIMENSION), "c": Int(0, MAX_DIMENSION),
                       "w": Int(1, MAX_DIMENSION), "h": Int(1, MAX_DIMENSION), "channels": Int(1, MAX_DIMENSION)}),
    }, optional=("source",))),
    "tail": Obj({"model": Int(0, MAX_ITEMS)}),
    "arena": Obj({
        "size": Int(), "interpreters": Str(INTERPRETER_MODES), "shared": _SECTION, "stages": List(_SECTION),
        "persistent": List(Obj({"model": Int(0, MAX_ITEMS), "offset": Int(), "size": Int()}), 1),
        "temp_reserve": Int(), "offline_plans": Bool(), "unplanned_reason": Str(),
        "in_place": List(Int(0, MAX_ITEMS)),
    }, optional=("interpreters", "temp_reserve", "offline_plans", "unplanned_reason", "in_place")),
    "stats": Obj({"macs": Int(0, 1 << 50), "mac_overhead": Float(), "flash_bytes": Int(),
                  "baseline": Obj({"macs": Int(0, 1 << 50), "flash_bytes": Int()}, optional=("macs", "flash_bytes"))},
                 optional=("macs", "mac_overhead", "flash_bytes", "baseline")),
    "labels": List(Str(), 1),
    "box_coding": Obj({"anchors": List(List(Float(0, exclusive_low=True), 2, 2), 1),
                       "classes": Int(1, MAX_DIMENSION), "stride": Int(1, MAX_DIMENSION)}),
    "normalization": Obj({"mean": Float(-MAX_NORMALIZATION, MAX_NORMALIZATION),
                          "std": Float(0, MAX_NORMALIZATION, exclusive_low=True)}),
}, optional=("stats", "labels", "box_coding", "normalization"))


def check_plan_fields(plan):
    """Raise TinyVisionError unless the parsed ``plan.json`` has every field ``PLAN`` lists, of its type and range."""
    PLAN.check(plan, "")
    for i, model in enumerate(plan["models"]):
        given = [key for key in ("output_shape", "output_shapes") if model.get(key) is not None]
        if len(given) != 1:
            raise TinyVisionError(f"models[{i}] needs exactly one of output_shape and output_shapes, "
                                  f"it has {len(given)}")
    source = plan["source"]
    if source.get("output") is not None and source.get("outputs") is not None:
        raise TinyVisionError("source has both output and outputs")
