"""Box detection metrics: IoU, class-wise non-maximum suppression, VOC and COCO mean average precision.

Boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates (0-based, x1 / y1 exclusive edges), so a
box's area is ``(x1 - x0) * (y1 - y0)``. That is COCO's convention; VOC's 1-based inclusive pixel indices
map onto it as ``x0 = xmin - 1, x1 = xmax`` (what ``tinyvision.data.detection_formats`` does), and then
the VOC devkit's ``+ 1`` widths give the same IoU as here.

The two mAP functions follow the reference tools' rules, which differ:

- :func:`voc_map` (VOC2010+ devkit, ``VOCevaldet``): per class, detections over all images by descending
  score; each one takes the ground-truth box of its class it overlaps most in its image; IoU >= the
  threshold and that box not yet taken: true positive; taken already: false positive (a duplicate), even
  when another box would fit; below the threshold: false positive. A detection whose best box is
  'difficult' counts for nothing; difficult boxes are never missed. AP is the area under the precision
  envelope over all recall points.
- :func:`coco_map` (``pycocotools`` COCOeval, bbox, area range "all"): at each IoU threshold 0.5, 0.55 ..
  0.95, each detection (by descending score) takes the unmatched ground-truth box it overlaps most, a
  non-ignored one before an ignored one; 'difficult' boxes play COCO's ``iscrowd``: they are ignored, may
  take any number of detections, and their IoU is the intersection over the detection's area. Precision
  is sampled at 101 recall points; AP is averaged over thresholds and recall points.

Both average AP over the classes that have (non-difficult) ground truth; a class with none is left out.
"""
import dataclasses

import numpy as np

from tinyvision.errors import TinyVisionError

# pycocotools' own expressions, so that thresholds compare bit for bit (0.7000000000000001, not 0.7).
COCO_IOU_THRESHOLDS = tuple(np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1))
COCO_RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1)
COCO_MAX_DETECTIONS = 100


@dataclasses.dataclass(frozen=True)
class BoxDetection:
    """One detected box: ``box`` (x0, y0, x1, y1) in pixels, ``cls`` the class index, ``score`` its confidence."""

    box: tuple
    cls: int
    score: float


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """One image's objects: boxes float64 [n, 4] (x0, y0, x1, y1) pixels, classes int64 [n], difficult bool [n]
    (default: none). Any sequences are accepted and converted."""

    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray = None

    def __post_init__(self):
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        classes = np.asarray(self.classes, np.int64).reshape(-1)
        difficult = np.zeros(len(classes), bool) if self.difficult is None else np.asarray(self.difficult, bool)
        if not len(boxes) == len(classes) == len(difficult.reshape(-1)):
            raise TinyVisionError(f"ground truth with {len(boxes)} boxes, {len(classes)} classes and "
                                  f"{difficult.size} difficult flags")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "difficult", difficult.reshape(-1))

    @classmethod
    def of(cls, sample):
        """From a DetectionSample-like record (``boxes``, ``classes``, optional ``difficult``)."""
        return cls(sample.boxes, sample.classes, getattr(sample, "difficult", None))


@dataclasses.dataclass(frozen=True)
class MeanAveragePrecision:
    """``value``: AP averaged over ``per_class`` ({class index: AP}, classes with ground truth only);
    NaN when no class has ground truth."""

    value: float
    per_class: dict


def box_iou(a, b):
    """IoU of every box in ``a`` [n, 4] with every box in ``b`` [m, 4] -> float64 [n, m] (0 where both are empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(boxes, scores, classes, iou_threshold=0.5, max_detections=100):
    """Greedy class-wise NMS -> int64 indices of the kept boxes, by descending score (ties: input order).

    boxes: [n, 4]; scores: [n]; classes: [n]. A box is dropped when its IoU with a kept box of the same
    class exceeds ``iou_threshold``; at most ``max_detections`` boxes are kept (None: no limit).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise TinyVisionError(f"NMS of {len(boxes)} boxes with {len(scores)} scores and {len(classes)} classes")
    keep = []
    suppressed = np.zeros(len(boxes), bool)
    for i in np.argsort(-scores, kind="stable"):
        if max_detections is not None and len(keep) >= max_detections:
            break
        if suppressed[i]:
            continue
        keep.append(i)
        overlap = box_iou(boxes[i], boxes)[0] > iou_threshold
        suppressed |= overlap & (classes == classes[i])
    return np.asarray(keep, np.int64)


def voc_map(detections, ground_truths, iou_threshold=0.5):
    """VOC mAP (all-point interpolated AP, VOC2010+) -> MeanAveragePrecision.

    detections: per image, a list of BoxDetection; ground_truths: per image, a GroundTruth (same order).
    """
    _check_lengths(detections, ground_truths)
    per_class = {}
    for cls in _classes_with_ground_truth(ground_truths):
        found = sorted(((d.score, i, d.box) for i, ds in enumerate(detections) for d in ds if d.cls == cls),
                       key=lambda f: -f[0])
        taken = [np.zeros(int(np.sum(g.classes == cls)), bool) for g in ground_truths]
        outcomes = [_voc_outcome(box, ground_truths[i], cls, taken[i], iou_threshold) for _, i, box in found]
        tp = np.cumsum([o == "tp" for o in outcomes if o])
        fp = np.cumsum([o == "fp" for o in outcomes if o])
        positives = sum(int(np.sum((g.classes == cls) & ~g.difficult)) for g in ground_truths)
        per_class[cls] = _all_point_ap(tp / positives, tp / np.maximum(tp + fp, np.finfo(np.float64).eps))
    return _mean(per_class)


def coco_map(detections, ground_truths, iou_thresholds=COCO_IOU_THRESHOLDS, max_detections=COCO_MAX_DETECTIONS):
    """COCO mAP@[0.5:0.05:0.95] (101-point interpolated precision) -> MeanAveragePrecision.

    detections / ground_truths as for :func:`voc_map`. As in pycocotools, ``max_detections`` keeps the
    highest-scoring detections of each image *and class* (apply NMS's limit first for a per-image cap).
    ``iou_thresholds``: e.g. ``(0.5,)`` for COCO's AP50.
    """
    _check_lengths(detections, ground_truths)
    thresholds = np.asarray(iou_thresholds, np.float64).reshape(-1)
    per_class = {}
    for cls in _classes_with_ground_truth(ground_truths):
        scores, matched, ignored = [], [], []
        for image_detections, truth in zip(detections, ground_truths):
            own = sorted((d for d in image_detections if d.cls == cls), key=lambda d: -d.score)[:max_detections]
            is_cls = truth.classes == cls
            if own or is_cls.any():
                hit, skip = _coco_match(np.array([d.box for d in own]).reshape(-1, 4), truth.boxes[is_cls],
                                        truth.difficult[is_cls], thresholds)
                scores += [d.score for d in own]
                matched.append(hit)
                ignored.append(skip)
        positives = sum(int(np.sum((g.classes == cls) & ~g.difficult)) for g in ground_truths)
        # pycocotools sorts the images' detections together with a stable sort, images in the given order.
        order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
        matched = np.concatenate(matched, axis=1)[:, order]
        ignored = np.concatenate(ignored, axis=1)[:, order]
        per_class[cls] = float(np.mean([_coco_ap(m & ~i, ~m & ~i, positives) for m, i in zip(matched, ignored)]))
    return _mean(per_class)


# --- helpers -------------------------------------------------------------------------------

def _area(boxes):
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a, b):
    """Intersection areas [n, m] of boxes a [n, 4] and b [m, 4]."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _check_lengths(detections, ground_truths):
    if len(detections) != len(ground_truths):
        raise TinyVisionError(f"{len(detections)} detection lists for {len(ground_truths)} images")


def _classes_with_ground_truth(ground_truths):
    return sorted({int(c) for g in ground_truths for c in g.classes[~g.difficult]})


def _voc_outcome(box, truth, cls, taken, iou_threshold):
    """'tp', 'fp' or None (matched a difficult box) for one detection; marks the box it takes in ``taken``."""
    is_cls = truth.classes == cls
    if not is_cls.any():
        return "fp"
    iou = box_iou(box, truth.boxes[is_cls])[0]
    best = int(np.argmax(iou))
    if iou[best] < iou_threshold:
        return "fp"
    if truth.difficult[is_cls][best]:
        return None
    if taken[best]:
        return "fp"
    taken[best] = True
    return "tp"


def _all_point_ap(recall, precision):
    """Area under the precision envelope (the highest precision at any recall >= r), as VOC2010+ computes it."""
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _coco_match(det_boxes, gt_boxes, crowd, thresholds):
    """One image and class, detections sorted by score -> (matched, ignored): bool [thresholds, detections].

    A detection matched to a crowd (difficult) box is ignored; unmatched ones are false positives.
    """
    gt_order = np.argsort(crowd, kind="mergesort")  # non-crowd boxes first, as pycocotools orders them
    gt_boxes, crowd = gt_boxes[gt_order], crowd[gt_order]
    iou = box_iou(det_boxes, gt_boxes)
    # A crowd box's overlap is the intersection over the detection's own area.
    own_area = _area(det_boxes)[:, None]
    crowd_iou = np.divide(_intersection(det_boxes, gt_boxes), own_area, out=np.zeros_like(iou), where=own_area > 0)
    iou = np.where(crowd[None, :], crowd_iou, iou)
    matched = np.zeros((len(thresholds), len(det_boxes)), bool)
    ignored = np.zeros_like(matched)
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), bool)
        for d in range(len(det_boxes)):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(len(gt_boxes)):
                if taken[g] and not crowd[g]:
                    continue
                if m > -1 and not crowd[m] and crowd[g]:
                    break  # a real box matched already: crowd boxes (sorted last) cannot take it over
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m > -1:
                matched[t, d], ignored[t, d], taken[m] = True, crowd[m], True
    return matched, ignored


def _coco_ap(tp, fp, positives):
    """101-point interpolated AP of detections in score order (bool tp / fp [n]) over ``positives`` objects."""
    if not len(tp):
        return 0.0
    tp, fp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tp / positives
    precision = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1])[::-1]
    at = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
    # Recall points past the highest recall reached have precision 0.
    return float(np.mean(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)))


def _mean(per_class):
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return MeanAveragePrecision(value, per_class)
