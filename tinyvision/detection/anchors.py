"""Anchor sizes for box heads: k-means over box widths and heights with 1 - IoU as the distance (YOLOv2)."""
import numpy as np

from tinyvision.errors import TinyVisionError

# The procedural boxes are analytic fractions of the image side, so rendering small scenes gives the
# same size distribution as large ones, at a fraction of the cost.
_RENDER_RESOLUTION = 64


def size_iou(sizes, anchors):
    """IoU of boxes [n, 2] (w, h) with anchors [k, 2] (w, h) when both share a centre -> float64 [n, k]."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    inter = np.minimum(sizes[:, None, 0], anchors[None, :, 0]) * np.minimum(sizes[:, None, 1], anchors[None, :, 1])
    union = (sizes[:, 0] * sizes[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def kmeans_anchors(sizes, count, iterations=100):
    """``count`` anchors [count, 2] (w, h), by ascending area, from box sizes [n, 2] (w, h, any unit).

    Deterministic: the centres start at the sizes of evenly spaced area quantiles, then Lloyd
    iterations assign each box to the anchor of highest IoU and move each anchor to its boxes' mean
    size, until nothing changes (or ``iterations``).
    """
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if not (isinstance(count, int) and count >= 1):
        raise TinyVisionError(f"anchor count must be an int >= 1, got {count!r}")
    if len(sizes) < count or not np.all(sizes > 0):
        raise TinyVisionError(f"k-means of {count} anchors needs at least {count} boxes of positive size, "
                              f"got {len(sizes)}")
    by_area = sizes[np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")]
    anchors = by_area[((np.arange(count) + 0.5) * len(sizes) / count).astype(int)]
    for _ in range(iterations):
        nearest = np.argmax(size_iou(sizes, anchors), axis=1)
        moved = np.array([sizes[nearest == k].mean(axis=0) if np.any(nearest == k) else anchors[k]
                          for k in range(count)])
        if np.array_equal(moved, anchors):
            break
        anchors = moved
    return anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]


def procedural_anchors(count=3, resolution=160, samples=300, seed=0):
    """k-means anchors [count, 2] (w, h) in pixels at ``resolution`` for the built-in detection scenes."""
    from tinyvision.data.detection import detection_samples

    boxes = np.concatenate([s.boxes for s in detection_samples(samples, _RENDER_RESOLUTION, seed)])
    anchors = kmeans_anchors(boxes[:, 2:] - boxes[:, :2], count)
    return anchors * (resolution / _RENDER_RESOLUTION)
