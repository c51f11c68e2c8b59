"""Named models for ``tinyvision build --model NAME``: ZOO[name] is a builder partial."""
import functools

from tinyvision.errors import TinyVisionError
from models.mobilenet_v2 import mobilenet_v2, mobilenet_v2_rd
from models.seed003 import seed003

ZOO = {
    "mobilenet_v2_0.35_96": functools.partial(mobilenet_v2, alpha=0.35, resolution=96),
    "mobilenet_v2_0.35_144": functools.partial(mobilenet_v2, alpha=0.35, resolution=144),
    "mobilenet_v2_1.0_224": functools.partial(mobilenet_v2, alpha=1.0, resolution=224),
    "mobilenet_v2_rd_0.35_144": functools.partial(mobilenet_v2_rd, alpha=0.35, resolution=144),
    "seed003_imagenet": functools.partial(seed003, config="imagenet"),
    "seed003_vww": functools.partial(seed003, config="vww"),
}


def build(name, **overrides):
    """Build zoo model ``name``; ``overrides`` replace the builder's keyword arguments."""
    if name not in ZOO:
        raise TinyVisionError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    try:
        return ZOO[name](**overrides)
    except TypeError as e:
        raise TinyVisionError(f"{name}: {e}") from None
