"""Geometric augmentation of annotated detection samples: the boxes move with the image.

Samples are DetectionSample-like (image uint8 [H, W, 3]; boxes float32 [n, 4] (x0, y0, x1, y1) in continuous
pixel coordinates, 0-based, x1 / y1 the far edges; classes int32 [n]; optional difficult bool [n]); every
function returns a new :class:`~tinyvision.data.detection_formats.AnnotatedImage` and leaves its input alone.

:func:`augment` draws a horizontal flip and a crop from ``seed`` alone (the same seed, the same result) and
then fits the crop to a square model input with :func:`resize`.
"""
import numpy as np

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

from tinyvision.data.detection_formats import AnnotatedImage, annotated
from tinyvision.errors import TinyVisionError

RESIZE_MODES = ("letterbox", "stretch")


def flip_horizontal(sample):
    """The mirror image: a box (x0, y0, x1, y1) becomes (W - x1, y0, W - x0, y1)."""
    record = annotated(sample)
    width = record.image.shape[1]
    boxes = record.boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [width, 0, width, 0]
    return _with(record, record.image[:, ::-1], boxes)


def crop(sample, x, y, width, height, min_visible=0.25):
    """The window of ``width`` x ``height`` pixels at column ``x``, row ``y`` (integers, inside the image).

    Boxes are shifted and clipped to the window; an object keeps its place only while at least
    ``min_visible`` of its box area lies inside the window (and some of it does).
    """
    record = annotated(sample)
    rows, cols = record.image.shape[:2]
    if not (0 <= x and 0 <= y and 1 <= width and 1 <= height and x + width <= cols and y + height <= rows):
        raise TinyVisionError(f"crop window {width} x {height} at ({x}, {y}) is not inside the {cols} x {rows} image")
    shifted = record.boxes.astype(np.float64) - [x, y, x, y]
    clipped = np.clip(shifted, 0, [width, height, width, height])
    area = _area(shifted)
    visible = np.divide(_area(clipped), area, out=np.zeros_like(area), where=area > 0)
    keep = (visible >= min_visible) & (_area(clipped) > 0)
    return _with(record, record.image[y:y + height, x:x + width], clipped[keep], keep)


def resize(sample, resolution, mode="letterbox", fill=0):
    """The image fitted to ``resolution`` x ``resolution`` (bilinear, antialiased), boxes scaled with it.

    ``letterbox``: scaled by the same factor on both axes until the longer side fits, centred, the rest
    filled with ``fill`` (0-255); ``stretch``: each axis scaled to fit (the aspect ratio changes).
    """
    if mode not in RESIZE_MODES:
        raise TinyVisionError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise TinyVisionError(f"resolution must be a positive integer, got {resolution!r}")
    record = annotated(sample)
    rows, cols = record.image.shape[:2]
    if mode == "stretch":
        new_rows, new_cols = resolution, resolution
    else:
        scale = resolution / max(rows, cols)
        new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    pixels = tf.image.resize(record.image, (new_rows, new_cols), method="bilinear", antialias=True)
    pixels = np.clip(np.round(pixels.numpy()), 0, 255).astype(np.uint8)
    top, left = (resolution - new_rows) // 2, (resolution - new_cols) // 2
    canvas = np.full((resolution, resolution, 3), fill, np.uint8)
    canvas[top:top + new_rows, left:left + new_cols] = pixels
    # The exact per-axis factors of the resized pixels, so boxes stay on the objects after rounding the size.
    boxes = record.boxes * [new_cols / cols, new_rows / rows, new_cols / cols, new_rows / rows] + [left, top, left, top]
    return _with(record, canvas, boxes)


def augment(sample, resolution, seed, flip=True, min_scale=0.5, min_visible=0.25, mode="letterbox"):
    """A random flip (probability 1/2, when ``flip``) and crop, then :func:`resize` to the model input.

    The crop keeps the image's aspect ratio, its sides a fraction uniform in [``min_scale``, 1] of the
    image's, at a uniform position; objects less than ``min_visible`` inside it are dropped.
    """
    if not 0 < min_scale <= 1:
        raise TinyVisionError(f"min_scale must be in (0, 1], got {min_scale!r}")
    rng = np.random.default_rng(seed)
    # Every draw is made whatever the options, so that a seed gives the same crop with or without flipping.
    mirror, fraction, offset = rng.uniform() < 0.5, rng.uniform(min_scale, 1.0), rng.uniform(size=2)
    record = flip_horizontal(sample) if flip and mirror else annotated(sample)
    rows, cols = record.image.shape[:2]
    width, height = max(1, round(cols * fraction)), max(1, round(rows * fraction))
    x, y = int(offset[0] * (cols - width + 1)), int(offset[1] * (rows - height + 1))
    return resize(crop(record, x, y, width, height, min_visible), resolution, mode)


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _with(record, image, boxes, keep=None):
    """``record`` with a new image and boxes (and only the objects ``keep`` selects)."""
    keep = np.ones(len(record.classes), bool) if keep is None else keep
    return AnnotatedImage(np.ascontiguousarray(image), np.asarray(boxes, np.float32).reshape(-1, 4),
                          record.classes[keep], record.difficult[keep], record.source)
