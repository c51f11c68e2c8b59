"""Centroid decoding of a per-cell class heatmap: local maxima over a threshold, per class.

The same rules as ``tflm_app/centroid_decoder.cpp`` (the device decoder), so that on an int8
heatmap with an int8 threshold both return the same detections in the same order:

- channel 0 is the background and is never decoded;
- cell (y, x) of class channel k is a detection when its score is >= the threshold and it is a
  local maximum of channel k over its 8 neighbours: strictly greater than the neighbours that
  come before it in raster order, greater or equal to those after it (a plateau of equal scores
  gives one detection, at its first cell in raster order);
- detections come in raster order of the cells, classes in channel order within a cell, and at
  most ``max_detections`` of them (the first ones in that order).
"""
import dataclasses

import numpy as np

from tinyvision.errors import TinyVisionError

# Neighbour offsets (dy, dx) before the cell in raster order, then after it.
_BEFORE = ((-1, -1), (-1, 0), (-1, 1), (0, -1))
_AFTER = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclasses.dataclass(frozen=True)
class Detection:
    """cls: object class (heatmap channel - 1); x, y: cell column and row; score: the heatmap value."""

    cls: int
    x: int
    y: int
    score: float


def decode_centroids(heatmap, threshold, max_detections=None):
    """Detections of one heatmap ``[gh, gw, classes + 1]`` (float probabilities or raw int8 values).

    ``threshold`` is compared with the heatmap's own values (an int8 heatmap takes an int8
    threshold, see ``quantize_threshold``). Returns a list of Detection.
    """
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 3 or heatmap.shape[2] < 2:
        raise TinyVisionError(f"a heatmap is [rows, columns, classes + 1] with a background channel, "
                              f"got shape {heatmap.shape}")
    rows, cols, channels = heatmap.shape
    # Pad with -inf (floats) or a value below int8's range, so border cells compare with nothing.
    values = heatmap.astype(np.float64 if heatmap.dtype.kind == "f" else np.int32)
    low = -np.inf if values.dtype.kind == "f" else np.iinfo(np.int32).min
    padded = np.full((rows + 2, cols + 2, channels), low, values.dtype)
    padded[1:-1, 1:-1] = values
    peak = values >= threshold
    for dy, dx in _BEFORE:
        peak &= values > padded[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
    for dy, dx in _AFTER:
        peak &= values >= padded[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]
    peak[:, :, 0] = False
    found = [Detection(int(k) - 1, int(x), int(y), heatmap[y, x, k].item()) for y, x, k in np.argwhere(peak)]
    return found if max_detections is None else found[:max_detections]


def quantize_threshold(threshold, scale, zero_point):
    """The int8 threshold equivalent to a probability ``threshold`` for values ``scale * (q - zero_point)``:
    the smallest q whose value is >= threshold (so float and int8 decoding keep the same cells)."""
    q = int(np.ceil(threshold / scale - 1e-9)) + int(zero_point)
    return int(np.clip(q, -128, 127))
