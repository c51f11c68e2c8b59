"""Byte sizes on the command line: 256KiB, 256KB, 262144."""
import re

from tinyvision.errors import TinyVisionError

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "k": 1024, "mb": 1000**2, "mib": 1024**2, "m": 1024**2}


def parse_bytes(text):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    if not match or match.group(2).lower() not in _UNITS:
        raise TinyVisionError(f"cannot read {text!r} as a size (examples: 262144, 256KiB, 256KB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
