"""A built-in, procedural object-detection dataset with exact boxes and centroid target maps.

Every image is rendered from ``(seed, split, index)`` alone (deterministic, random access,
no files). A scene holds 0-5 objects of :data:`DETECTION_CLASSES` -- filled circles
(reddish), squares (greenish) and triangles (bluish), colour jittered, rotated, radius 6-16 %
of the image -- over the classification data's clutter (two-colour gradient, stripes,
blotches), with 0-3 thin distractor lines, 0-2 distractor shapes that belong to no class
(crosses, rings, stars in random colours) and pixel noise. Objects may overlap (a later
one occludes an earlier one) but never cover another object's centre, and no two object
box centres fall in the same heatmap cell, so the centroid targets are unambiguous.

Boxes are the exact geometric extents of the shapes, ``(x0, y0, x1, y1)`` in pixels of
the rendered image (every object lies wholly inside it). The centroid target map of a
model of output stride ``s`` has ``R / s x R / s`` cells: 0 (background) everywhere but
``class + 1`` in the cell holding an object's box centre (FOMO's training target; for a rotated
triangle the box centre is a little off the shape's own centre, as with boxes drawn by hand).
"""
import dataclasses

import numpy as np

from tinyvision.data.normalization import normalize
from tinyvision.data.synthetic import (_background, _circle, _composite, _cross, _draw_line, _grid, _local, _ring,
                                       _split_code, _square, _star, _triangle)
from tinyvision.errors import TinyVisionError

DETECTION_CLASSES = ("circle", "square", "triangle")
BACKGROUND = "background"
DEFAULT_STRIDE = 8
MAX_OBJECTS = 5

# Per class: signed distance function (shape units, fits the unit disc), radius of the disc
# around the centre that holds the whole shape, base colour.
_SHAPES = {
    "circle": (_circle, 0.9, (0.9, 0.15, 0.1)),
    "square": (_square, 0.7 * np.sqrt(2.0), (0.1, 0.8, 0.2)),
    "triangle": (_triangle, 0.95, (0.15, 0.25, 0.95)),
}
_DISTRACTORS = (_cross, _ring, _star)
_SCALE_RANGE = (0.06, 0.16)  # shape units -> fraction of the image side


def detection_class_names():
    """Per-cell output names, index = heatmap channel: background first, then DETECTION_CLASSES."""
    return (BACKGROUND,) + DETECTION_CLASSES


@dataclasses.dataclass(frozen=True)
class DetectionSample:
    """image: uint8 [R, R, 3]; boxes: float32 [n, 4] (x0, y0, x1, y1) in pixels; classes: int32 [n]
    (index into DETECTION_CLASSES)."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray

    @property
    def centres(self):
        """float32 [n, 2]: (x, y) box centres in pixels."""
        return np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2, (self.boxes[:, 1] + self.boxes[:, 3]) / 2], 1)


def render_detection_sample(index, resolution=160, seed=0, split="train", stride=DEFAULT_STRIDE):
    """One scene -> DetectionSample (objects' centres in distinct ``stride``-pixel cells)."""
    _check(1, resolution, stride)
    return _render(int(index), resolution, seed, _split_code(split), stride)


def centroid_targets(sample, stride=DEFAULT_STRIDE):
    """int32 [R / stride, R / stride]: 0 (background), ``class + 1`` in the cell of each box centre."""
    cells = sample.image.shape[0] // stride
    targets = np.zeros((cells, cells), np.int32)
    for (x, y), cls in zip(sample.centres, sample.classes):
        targets[int(y // stride), int(x // stride)] = cls + 1
    return targets


def detection_samples(num_samples, resolution=160, seed=0, split="train", stride=DEFAULT_STRIDE, start=0):
    """Samples ``start .. start + num_samples - 1`` as a list of DetectionSample."""
    _check(num_samples, resolution, stride)
    code = _split_code(split)
    return [_render(start + i, resolution, seed, code, stride) for i in range(num_samples)]


def detection_arrays(num_samples, resolution=160, seed=0, split="train", stride=DEFAULT_STRIDE, start=0):
    """(float32 images [N, R, R, 3] in [-1, 1], int32 centroid targets [N, R/s, R/s], [DetectionSample])."""
    samples = detection_samples(num_samples, resolution, seed, split, stride, start)
    images = normalize(np.stack([s.image for s in samples]))
    return images, np.stack([centroid_targets(s, stride) for s in samples]), samples


def detection_dataset(num_samples, resolution=160, seed=0, split="train", stride=DEFAULT_STRIDE, batch_size=32,
                      shuffle=False, cache=True):
    """The same scenes as a tf.data pipeline of (float32 [B, R, R, 3], int32 targets [B, R/s, R/s]),
    rendered lazily (``batch_size`` None: single samples); see ``synthetic_dataset`` for shuffle/cache."""
    import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow as tf

    _check(num_samples, resolution, stride)
    code = _split_code(split)
    cells = resolution // stride

    def render(index):
        sample = _render(int(index), resolution, seed, code, stride)
        return normalize(sample.image), centroid_targets(sample, stride)

    def render_tf(index):
        image, targets = tf.numpy_function(render, [index], (tf.float32, tf.int32), stateful=False)
        image.set_shape((resolution, resolution, 3))
        targets.set_shape((cells, cells))
        return image, targets

    ds = tf.data.Dataset.range(num_samples).map(render_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(num_samples, seed=seed, reshuffle_each_iteration=True)
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check(num_samples, resolution, stride):
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise TinyVisionError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise TinyVisionError(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(resolution, (int, np.integer)) or resolution < 4 * stride or resolution % stride:
        raise TinyVisionError(f"resolution must be a multiple of the stride {stride} and at least {4 * stride}, "
                              f"got {resolution!r}")


def _render(index, resolution, seed, split_code, stride):
    # Its own stream, apart from the classification data's (which seeds with [seed, split, index]).
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, split_code, index, 0xD7])
    grid = _grid(resolution)
    image = _background(rng, grid)
    for _ in range(rng.integers(0, 4)):
        image = _draw_line(rng, grid, image, resolution)
    for _ in range(rng.integers(0, 3)):
        scale = rng.uniform(*_SCALE_RANGE)
        cx, cy = rng.uniform(scale, 1.0 - scale, 2)
        sdf = _DISTRACTORS[rng.integers(len(_DISTRACTORS))](*_local(grid, cx, cy, rng.uniform(0, 2 * np.pi), scale),
                                                             rng)
        image = _composite(image, rng.uniform(0, 1, 3), sdf * scale * resolution)
    # About one scene in ten holds no object: the detector must learn to stay silent.
    count = 0 if rng.uniform() < 0.1 else int(rng.integers(1, MAX_OBJECTS + 1))
    placed, boxes, classes = [], [], []
    for _ in range(count):
        cls = int(rng.integers(len(DETECTION_CLASSES)))
        sdf_fn, reach, base = _SHAPES[DETECTION_CLASSES[cls]]
        scale = rng.uniform(*_SCALE_RANGE)
        angle = 0.0 if cls == 0 else rng.uniform(0, 2 * np.pi)
        lo, hi = _extent(cls, scale, angle)
        offset = (lo + hi) / 2  # box centre - shape centre (nonzero for a rotated triangle)
        reach = reach * scale + np.hypot(*offset)  # a disc around the box centre that holds the shape
        for _ in range(30):
            cx, cy = rng.uniform(-lo, 1.0 - hi)
            bx, by = cx + offset[0], cy + offset[1]
            cell = (int(by * resolution // stride), int(bx * resolution // stride))
            # Neither shape may cover the other's box centre; they may still overlap, the later one
            # occluding the earlier.
            if all(np.hypot(bx - px, by - py) > 1.05 * max(reach, pr) and cell != pc for px, py, pr, pc in placed):
                break
        else:
            continue
        placed.append((bx, by, reach, cell))
        sdf = sdf_fn(*_local(grid, cx, cy, angle, scale), rng)
        colour = np.clip(np.asarray(base) + rng.uniform(-0.12, 0.12, 3), 0, 1) * rng.uniform(0.7, 1.0)
        image = _composite(image, colour, sdf * scale * resolution)
        boxes.append([(cx + lo[0]) * resolution, (cy + lo[1]) * resolution,
                      (cx + hi[0]) * resolution, (cy + hi[1]) * resolution])
        classes.append(cls)
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.05), image.shape)
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return DetectionSample(pixels, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int32))


def _extent(cls, scale, angle):
    """(lowest, highest) offsets [dx, dy] of class ``cls``'s box from its shape centre at ``scale`` and
    rotation ``angle``, in image fractions."""
    if cls == 0:  # circle of radius 0.9
        return np.array([-0.9 * scale] * 2), np.array([0.9 * scale] * 2)
    if cls == 1:  # square of half side 0.7
        u = np.array([-0.7, 0.7, 0.7, -0.7])
        v = np.array([-0.7, -0.7, 0.7, 0.7])
    else:  # triangle: vertices opposite its edge normals (-90, 30, 150 degrees), circumradius 0.95
        a = np.deg2rad([90.0, 210.0, 330.0])
        u, v = 0.95 * np.cos(a), 0.95 * np.sin(a)
    # _local maps image offsets to shape units by a rotation by -angle: invert it.
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = scale * (c * u - s * v), scale * (s * u + c * v)
    return np.array([dx.min(), dy.min()]), np.array([dx.max(), dy.max()])
