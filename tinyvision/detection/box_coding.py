"""Box head targets and decoding: ground-truth boxes <-> the BoxHead's per-cell, per-anchor sigmoid outputs.

Layout (``tinyvision.layers.BoxHead``): an output ``[gh, gw, A * (5 + C)]``, anchor ``a`` in channels
``a * (5 + C) ..``: ``s_x, s_y, s_w, s_h`` (box), ``s_obj`` (objectness), ``C`` class scores, all in
[0, 1]. Boxes are (x0, y0, x1, y1) in input pixels (``tinyvision.detection.box_metrics``). The cell in row
``i``, column ``j`` and anchor ``(a_w, a_h)`` decode (YOLOv5) to

    centre = ((j, i) + 2 * (s_x, s_y) - 0.5) * stride        size = (a_w, a_h) * (2 * (s_w, s_h)) ** 2

so a centre may lie up to half a cell outside its own cell and a size spans 0 .. 4 x the anchor. A
detection's score is ``s_obj`` times its best class score. Decoding works in float32 in a fixed order
of operations, which ``tflm_app/box_decoder.cpp`` repeats, so both give the same boxes bit for bit.
"""
import dataclasses

import numpy as np

from tinyvision.detection.anchors import size_iou
from tinyvision.detection.box_metrics import BoxDetection, non_max_suppression
from tinyvision.errors import TinyVisionError
from tinyvision.layers.box_head import BOX_FIELDS

# The device decoder's fixed capacities (tflm_app/box_decoder.h): boxes over the score threshold that
# NMS considers (the best ones), and detections kept.
MAX_CANDIDATES = 64
MAX_DETECTIONS = 16


@dataclasses.dataclass(frozen=True)
class BoxCoding:
    """What turns boxes into a BoxHead's targets and back: ``anchors`` [[w, h], ...] in pixels,
    ``classes`` (object classes), ``stride`` (pixels per cell)."""

    anchors: tuple
    classes: int
    stride: int

    def __post_init__(self):
        object.__setattr__(self, "anchors", tuple((float(w), float(h)) for w, h in self.anchors))

    @classmethod
    def of(cls, head):
        """The coding of a BoxHead layer (or anything with its ``anchors``, ``classes`` and ``stride``)."""
        return cls(head.anchors, head.classes, head.stride)

    def to_dict(self):
        """The coding as JSON-ready data, which converted models carry (TFLite metadata, plan.json)."""
        return {"anchors": [list(a) for a in self.anchors], "classes": self.classes, "stride": self.stride}

    @classmethod
    def from_dict(cls, data, where="box coding"):
        """The inverse of :meth:`to_dict`; TinyVisionError naming ``where`` for anything malformed."""
        try:
            anchors, classes, stride = data["anchors"], data["classes"], data["stride"]
            valid = (isinstance(classes, int) and classes >= 1 and isinstance(stride, int) and stride >= 1 and
                     len(anchors) >= 1 and all(len(a) == 2 and min(a) > 0 for a in anchors))
        except (KeyError, TypeError):
            valid = False
        if not valid:
            raise TinyVisionError(f"{where}: expected {{anchors: [[w, h], ...], classes: int, stride: int}}, "
                                  f"got {data!r:.200}")
        return cls(anchors, classes, stride)

    @property
    def fields(self):
        """Channels per anchor: 4 box offsets, objectness, the class scores."""
        return BOX_FIELDS + self.classes

    def targets(self, boxes, classes, grid, extra_iou=None):
        """float32 [gh, gw, A * (5 + C)] training targets for one image, laid out like the head's output.

        boxes [n, 4] pixels, classes [n]; grid (gh, gw). Each box goes to the cell holding its centre
        and the anchor whose shape it overlaps most (centred IoU); with ``extra_iou``, also to every
        other anchor of that cell with an IoU above it. A slot gets objectness 1, its one-hot class and
        the encoded box (the inverse of decoding; sizes over 4 x the anchor saturate); all other
        slots are 0. Two boxes in one slot: the later one takes it.
        """
        rows, cols = grid
        anchors = np.asarray(self.anchors, np.float64)
        out = np.zeros((rows, cols, len(anchors), self.fields), np.float32)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        sizes = boxes[:, 2:] - boxes[:, :2]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for anchor_ious, (cx, cy), size, cls in zip(size_iou(sizes, anchors), centres, sizes, np.asarray(classes)):
            if not 0 <= cls < self.classes:
                raise TinyVisionError(f"class {cls} outside 0 .. {self.classes - 1}")
            col = min(max(int(cx // self.stride), 0), cols - 1)
            row = min(max(int(cy // self.stride), 0), rows - 1)
            chosen = {int(np.argmax(anchor_ious))}
            if extra_iou is not None:
                chosen |= set(np.flatnonzero(anchor_ious > extra_iou).tolist())
            for a in sorted(chosen):
                slot = out[row, col, a]
                slot[:] = 0
                slot[0:2] = (np.array([cx - col * self.stride, cy - row * self.stride]) / self.stride + 0.5) / 2
                slot[2:4] = np.minimum(np.sqrt(size / anchors[a]) / 2, 1.0)
                slot[4] = 1.0
                slot[BOX_FIELDS + int(cls)] = 1.0
        return out.reshape(rows, cols, -1)

    def decode(self, output, threshold=0.25, iou_threshold=0.5, max_detections=MAX_DETECTIONS,
               max_candidates=MAX_CANDIDATES, scale=None, zero_point=None, image_size=None):
        """One image's head output -> [BoxDetection] by descending score, after class-wise greedy NMS.

        output: [gh, gw, A * (5 + C)], float probabilities, or raw int8 with the output's ``scale`` and
        ``zero_point`` (dequantized to float32 first). A slot is a candidate when ``s_obj * best class
        score >= threshold``; the ``max_candidates`` best candidates (ties: raster order of row, column,
        anchor) go to ``box_metrics.non_max_suppression``, which keeps at most ``max_detections``.
        Boxes are clipped to ``image_size`` (height, width) in pixels (default: the grid times the stride).
        """
        boxes, classes, scores = self.slots(output, scale, zero_point, image_size)
        candidates = np.flatnonzero(scores >= np.float32(threshold))
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")][:max_candidates]
        keep = candidates[non_max_suppression(boxes[candidates], scores[candidates], classes[candidates],
                                              iou_threshold, max_detections)]
        return [BoxDetection(tuple(float(v) for v in boxes[i]), int(classes[i]), float(scores[i])) for i in keep]

    def slots(self, output, scale=None, zero_point=None, image_size=None):
        """Every slot's box float32 [n, 4], class int64 [n] and score float32 [n], n = gh * gw * A in raster
        order of row, column, anchor; arguments as for :meth:`decode`."""
        rows, cols = output.shape[:2]
        p = self._probabilities(output, scale, zero_point).reshape(rows, cols, len(self.anchors), self.fields)
        boxes = self._boxes(p, image_size or (rows * self.stride, cols * self.stride)).reshape(-1, 4)
        class_scores = p[..., BOX_FIELDS:].reshape(-1, self.classes)
        classes = np.argmax(class_scores, axis=1)
        return boxes, classes, p[..., 4].reshape(-1) * class_scores[np.arange(len(classes)), classes]

    def _boxes(self, p, image_size):
        """float32 [gh, gw, A, 4] boxes (x0, y0, x1, y1) of probabilities p [gh, gw, A, fields]."""
        rows, cols = p.shape[:2]
        f32 = np.float32
        grid_x = np.arange(cols, dtype=f32)[None, :, None]
        grid_y = np.arange(rows, dtype=f32)[:, None, None]
        stride = f32(self.stride)
        cx = (grid_x + f32(2) * p[..., 0] - f32(0.5)) * stride
        cy = (grid_y + f32(2) * p[..., 1] - f32(0.5)) * stride
        anchors = np.asarray(self.anchors, f32)
        tw, th = f32(2) * p[..., 2], f32(2) * p[..., 3]
        half_w = f32(0.5) * (anchors[:, 0] * (tw * tw))
        half_h = f32(0.5) * (anchors[:, 1] * (th * th))
        height, width = (f32(v) for v in image_size)
        return np.stack([np.clip(cx - half_w, f32(0), width), np.clip(cy - half_h, f32(0), height),
                         np.clip(cx + half_w, f32(0), width), np.clip(cy + half_h, f32(0), height)], axis=-1)

    def _probabilities(self, output, scale, zero_point):
        channels = len(self.anchors) * self.fields
        if output.ndim != 3 or output.shape[2] != channels:
            raise TinyVisionError(f"box head output {output.shape}; expected [gh, gw, {channels}]")
        if scale is None:
            return np.asarray(output, np.float32)
        return (output.astype(np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)


def box_targets(samples, coding, grid, extra_iou=None):
    """float32 [N, gh, gw, A * (5 + C)]: ``coding.targets`` of each DetectionSample-like record."""
    return np.stack([coding.targets(s.boxes, s.classes, grid, extra_iou) for s in samples])
