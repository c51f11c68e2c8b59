"""Centroid precision, recall and F1 (FOMO's detection metric: object centres, not box overlap)."""
import dataclasses

import numpy as np

from tinyvision.errors import TinyVisionError


@dataclasses.dataclass(frozen=True)
class CentroidScore:
    """Counts over a set of images: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self):
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self):
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self):
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 1.0

    def __add__(self, other):
        return CentroidScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def match_centroids(detections, centres, classes, stride, tolerance=1, class_agnostic=False):
    """Match one image's detections to its objects -> (CentroidScore, matched object index or -1 per detection).

    detections: list of Detection (cell x, y; class; score); centres: float [n, 2] object centres (x, y)
    in pixels; classes: int [n]; stride: pixels per cell. A detection matches an object of its class
    (of any class when ``class_agnostic``: a detector whose classes are not the data's) whose centre lies
    in a cell at most ``tolerance`` cells away (Chebyshev; 0: the same cell).
    Detections are taken by descending score (ties: in the given order), each object at most once.
    """
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    classes = np.asarray(classes).reshape(-1)
    if len(centres) != len(classes):
        raise TinyVisionError(f"{len(centres)} object centres for {len(classes)} classes")
    if not (isinstance(tolerance, int) and tolerance >= 0):
        raise TinyVisionError(f"tolerance must be an int >= 0 cells, got {tolerance!r}")
    cells = np.floor(centres / stride).astype(np.int64)
    taken = np.zeros(len(centres), bool)
    matched = [-1] * len(detections)
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    for i in order:
        d = detections[i]
        distance = np.maximum(np.abs(cells[:, 0] - d.x), np.abs(cells[:, 1] - d.y))
        same_class = True if class_agnostic else classes == d.cls
        candidates = np.flatnonzero(same_class & ~taken & (distance <= tolerance))
        if len(candidates):
            # The nearest centre in pixels from the detection's cell centre.
            offsets = centres[candidates] - (np.array([d.x, d.y]) + 0.5) * stride
            best = candidates[np.argmin(np.hypot(offsets[:, 0], offsets[:, 1]))]
            taken[best] = True
            matched[i] = int(best)
    tp = int(taken.sum())
    return CentroidScore(tp, len(detections) - tp, len(centres) - tp), matched


def score_detections(per_image_detections, samples, stride, tolerance=1, class_agnostic=False):
    """CentroidScore summed over images: ``samples`` are DetectionSample (or anything with centres / classes)."""
    if len(per_image_detections) != len(samples):
        raise TinyVisionError(f"{len(per_image_detections)} detection lists for {len(samples)} images")
    total = CentroidScore(0, 0, 0)
    for detections, sample in zip(per_image_detections, samples):
        total = total + match_centroids(detections, sample.centres, sample.classes, stride, tolerance,
                                        class_agnostic)[0]
    return total
