"""Named models for ``tinyvision build --model NAME``: ZOO[name] is a builder partial.

``zoo_figures.json`` (next to this file) holds every entry's input shape, classes, params, MACs and
int8 flash, so that ``tinyvision build --list`` prints them without TensorFlow; ``python -m models
--write-figures`` rebuilds the models and rewrites it (tests/test_cli_startup.py checks it against them).
"""
import functools
import json
import os

from tinyvision.errors import TinyVisionError
from models.box_detector import box_detector
from models.detection import centroid_detector
from models.mobilenet_v2 import mobilenet_v2, mobilenet_v2_rd
from models.seed003 import seed003

ZOO = {
    "mobilenet_v2_0.35_96": functools.partial(mobilenet_v2, alpha=0.35, resolution=96),
    "mobilenet_v2_0.35_144": functools.partial(mobilenet_v2, alpha=0.35, resolution=144),
    "mobilenet_v2_1.0_224": functools.partial(mobilenet_v2, alpha=1.0, resolution=224),
    "mobilenet_v2_rd_0.35_144": functools.partial(mobilenet_v2_rd, alpha=0.35, resolution=144),
    "seed003_imagenet": functools.partial(seed003, config="imagenet"),
    "seed003_vww": functools.partial(seed003, config="vww"),
    "fomo_mobilenet_v2_0.35_160": functools.partial(centroid_detector, alpha=0.35, resolution=160),
    "yolo_mobilenet_v2_0.35_224": functools.partial(box_detector, alpha=0.35, resolution=224),
}

# What each entry's output means ("classification": [B, classes] scores; "detection": per-cell outputs,
# class probabilities [B, gh, gw, classes + 1] with background first (fomo_) or per-anchor boxes
# [B, gh, gw, anchors * (5 + classes)] (yolo_, see tinyvision.detection.box_coding)); ``build --task`` checks it.
TASKS = {name: "detection" if name.startswith(("fomo_", "yolo_")) else "classification" for name in ZOO}


def build(name, **overrides):
    """Build zoo model ``name``; ``overrides`` replace the builder's keyword arguments."""
    if name not in ZOO:
        raise TinyVisionError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    try:
        return ZOO[name](**overrides)
    except TypeError as e:
        raise TinyVisionError(f"{name}: {e}") from None


FIGURES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_figures.json")


def zoo_figures(name):
    """{"input", "task", "classes", "params", "macs", "flash_bytes"} of zoo entry ``name``, default arguments."""
    from models.describe import describe

    model = build(name)
    d = describe(model)
    return {"input": [int(v) for v in model.input_shape[1:]], "task": TASKS[name], "classes": _classes(model, name),
            "params": d["params"], "macs": d["macs"], "flash_bytes": d["flash_bytes"]}


def _classes(model, name):
    """The object classes a zoo model tells apart (what --classes sets)."""
    from tinyvision.layers import BoxHead

    heads = [layer for layer in model.layers if isinstance(layer, BoxHead)]
    if heads:
        return heads[0].classes
    # Centroid detectors output background + classes per cell.
    return int(model.output_shape[-1]) - (TASKS[name] == "detection")


def write_zoo_figures():
    """Rebuild every zoo entry and rewrite FIGURES_FILE with its figures."""
    lines = [f"  {json.dumps(name)}: {json.dumps(zoo_figures(name))}" for name in ZOO]
    with open(FIGURES_FILE, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    return FIGURES_FILE
