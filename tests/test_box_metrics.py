"""Box IoU, class-wise NMS and VOC / COCO mAP on hand-computed cases (and against pycocotools where installed)."""
import numpy as np
import pytest

from tinyvision.detection.box_metrics import (BoxDetection, GroundTruth, box_iou, coco_map, non_max_suppression,
                                              voc_map)
from tinyvision.errors import TinyVisionError

SQUARE = (0.0, 0.0, 10.0, 10.0)


def _det(box, score, cls=0):
    return BoxDetection(tuple(box), cls, score)


def test_iou_of_hand_made_boxes():
    iou = box_iou([SQUARE, (5, 5, 15, 15)], [SQUARE, (5, 0, 15, 10), (20, 20, 30, 30), (3, 3, 3, 3)])
    # (5, 0, 15, 10) overlaps half the square: 50 / (100 + 100 - 50); an empty box overlaps nothing.
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0, 0.0], [25 / 175, 50 / 150, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), [SQUARE]).shape == (0, 1)


def test_nms_is_greedy_by_score_and_class_wise():
    boxes = [SQUARE, (1, 0, 11, 10), (0, 0, 10, 10), (30, 30, 40, 40), (0, 1, 10, 11)]
    scores = [0.6, 0.9, 0.8, 0.5, 0.7]
    classes = [0, 0, 1, 0, 0]
    # Box 1 (0.9) suppresses boxes 0 and 4 of its class (IoU 0.82 and 0.74); box 2 is of another class.
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, classes, 0.5), [1, 2, 3])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, classes, 0.85), [1, 2, 4, 0, 3])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, classes, 0.5, max_detections=2), [1, 2])
    with pytest.raises(TinyVisionError):
        non_max_suppression(boxes, scores[:2], classes)


def test_perfect_detections_score_one():
    truths = [GroundTruth([SQUARE, (20, 20, 40, 30)], [0, 1]), GroundTruth([(5, 5, 9, 9)], [1])]
    detections = [[_det(SQUARE, 0.9), _det((20, 20, 40, 30), 0.8, 1)], [_det((5, 5, 9, 9), 0.3, 1)]]
    for metric in (voc_map, coco_map):
        result = metric(detections, truths)
        # pycocotools divides by tp + fp + 2.2e-16: its perfect score is 1 - 2.2e-16.
        assert result.value == pytest.approx(1.0) and result.per_class == pytest.approx({0: 1.0, 1: 1.0})


def _pr_curve_case():
    """3 objects in two images; detections by score: TP, FP, TP, FP, TP.

    precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
    """
    a, b, c = SQUARE, (20, 0, 30, 10), (0, 20, 10, 30)
    truths = [GroundTruth([a, b], [0, 0]), GroundTruth([c], [0])]
    far = (50, 50, 60, 60)
    detections = [[_det(a, 0.9), _det(far, 0.8), _det(b, 0.5)], [_det(far, 0.6), _det(c, 0.7)]]
    return detections, truths


def test_voc_ap_of_a_known_pr_curve():
    detections, truths = _pr_curve_case()
    # Envelope: 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1.
    assert voc_map(detections, truths).value == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_coco_ap_of_a_known_pr_curve():
    detections, truths = _pr_curve_case()
    # Every match is exact (IoU 1), so all ten thresholds agree. Of the 101 recall points 0, 0.01 .. 1:
    # 34 (0 .. 0.33) read precision 1, 33 (0.34 .. 0.66) read 2/3, 34 (0.67 .. 1) read 3/5.
    assert coco_map(detections, truths).value == pytest.approx((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101)


def test_duplicates_are_false_positives():
    truths = [GroundTruth([SQUARE], [0]), GroundTruth([(20, 0, 30, 10)], [0])]
    detections = [[_det(SQUARE, 0.9), _det((0, 0, 10, 9), 0.8)], [_det((20, 0, 30, 10), 0.7)]]
    # TP, FP (the second box on the same object), TP: recall 1/2, 1/2, 1 at precision 1, 1/2, 2/3.
    assert voc_map(detections, truths).value == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert voc_map([detections[0][:1], detections[1]], truths).value == 1.0


def test_voc_and_coco_match_a_second_detection_differently():
    # Two overlapping objects (IoU 2/3), two detections on the first. VOC gives the second detection the
    # object it overlaps most, taken already: a false positive. COCO gives it the best *unmatched* object,
    # the second one (IoU 80 / 120), at thresholds up to 0.65.
    truths = [GroundTruth([SQUARE, (2, 0, 12, 10)], [0, 0])]
    detections = [[_det(SQUARE, 0.9), _det(SQUARE, 0.8)]]
    assert voc_map(detections, truths).value == pytest.approx(0.5)
    # At 0.5 .. 0.65 both are true positives (AP 1); at 0.7 .. 0.95 recall stops at 1/2: 51 of 101 points.
    assert coco_map(detections, truths).value == pytest.approx((4 + 6 * 51 / 101) / 10)


def test_difficult_objects_are_neither_found_nor_missed():
    easy, hard = SQUARE, (20, 0, 30, 10)
    truths = [GroundTruth([easy, hard], [0, 0], [False, True]), GroundTruth([(0, 20, 10, 30)], [0], [True])]
    # The highest-scoring detection is on the difficult object: it counts for nothing; the difficult
    # object of image 2 is never detected and is not missed.
    detections = [[_det(hard, 0.9), _det(easy, 0.8)], []]
    assert voc_map(detections, truths).value == 1.0
    assert coco_map(detections, truths).value == pytest.approx(1.0)
    # Were it not difficult, the first detection would be right and the second image's object missed.
    plain = [GroundTruth(t.boxes, t.classes) for t in truths]
    assert voc_map(detections, plain).value == pytest.approx(2 / 3)


def test_classes_without_ground_truth_are_left_out():
    truths = [GroundTruth([SQUARE, (20, 0, 30, 10)], [0, 2], [False, True])]
    # Class 1 has detections but no objects; class 2 only a difficult one: neither is averaged.
    detections = [[_det(SQUARE, 0.9), _det((50, 50, 60, 60), 0.95, 1), _det((20, 0, 30, 10), 0.5, 2)]]
    for metric in (voc_map, coco_map):
        result = metric(detections, truths)
        assert list(result.per_class) == [0] and result.value == pytest.approx(1.0)
    assert np.isnan(voc_map([[]], [GroundTruth(np.zeros((0, 4)), [])]).value)


def test_coco_thresholds_give_a_value_strictly_between():
    # IoU 0.72: a match at 0.5, 0.55, 0.6, 0.65, 0.7 and a miss (plus a false positive) from 0.75 on.
    truths = [GroundTruth([SQUARE], [0])]
    detections = [[_det((0, 0, 10, 7.2), 0.9)]]
    assert voc_map(detections, truths).value == 1.0
    assert coco_map(detections, truths).value == pytest.approx(0.5)
    assert coco_map(detections, truths, iou_thresholds=(0.5,)).value == pytest.approx(1.0)


def test_coco_keeps_the_best_detections_of_each_image_and_class():
    truths = [GroundTruth([SQUARE], [0])]
    detections = [[_det((50, 50, 60, 60), 0.9), _det(SQUARE, 0.8)]]
    assert coco_map(detections, truths, max_detections=1).value == 0.0
    # A false positive, then the object: precision 1/2 at every recall point.
    assert coco_map(detections, truths, max_detections=2).value == pytest.approx(0.5)


def test_mismatched_inputs_are_refused():
    with pytest.raises(TinyVisionError, match="2 detection lists for 1 images"):
        voc_map([[], []], [GroundTruth([SQUARE], [0])])
    with pytest.raises(TinyVisionError, match="2 boxes, 1 classes"):
        GroundTruth([SQUARE, SQUARE], [0])


def _random_case(rng, images=12, classes=3):
    truths, detections = [], []
    for _ in range(images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(4, 30, (n, 2))], 1).round(1)
        truths.append(GroundTruth(boxes, rng.integers(0, classes, n), rng.uniform(size=n) < 0.15))
        found = []
        for box, cls in zip(boxes, truths[-1].classes):
            for _ in range(int(rng.integers(0, 3))):  # misses, hits and duplicates, jittered
                found.append(_det(box + rng.normal(0, 2, 4).round(1), float(rng.uniform()), int(cls)))
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            xy = rng.uniform(0, 80, 2)
            found.append(_det(np.concatenate([xy, xy + 10]), float(rng.uniform()), int(rng.integers(classes))))
        detections.append(found)
    return detections, truths


def test_coco_map_equals_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections, truths = _random_case(np.random.default_rng(3))
    annotations = []
    for i, truth in enumerate(truths):
        for (x0, y0, x1, y1), cls, difficult in zip(truth.boxes.tolist(), truth.classes, truth.difficult):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": int(difficult)})
    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(truths))], "annotations": annotations,
                  "categories": [{"id": k + 1, "name": str(k)} for k in range(3)]}
    gt.createIndex()
    results = [{"image_id": i + 1, "category_id": d.cls + 1, "score": d.score,
                "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]}
               for i, ds in enumerate(detections) for d in ds]
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert coco_map(detections, truths).value == pytest.approx(evaluation.stats[0], abs=1e-12)
