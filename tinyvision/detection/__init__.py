"""FOMO-style centroid detection: heatmap decoding, centroid precision / recall / F1, the training loss.

- decode_centroids(heatmap, threshold): per class, the cells that are local maxima over the threshold.
- match_centroids / CentroidScore: a detection is correct when an unmatched object of its class has its
  centre within ``tolerance`` cells (Chebyshev) of the detection's cell; precision, recall, F1.
- centroid_loss(background_weight): per-cell cross-entropy with background cells down-weighted.
- box_iou, non_max_suppression (greedy, class-wise), voc_map / coco_map (the reference tools' mean average
  precision over BoxDetection and GroundTruth): tinyvision.detection.box_metrics.
- anchor-based boxes (BoxHead): kmeans_anchors / procedural_anchors (anchor sizes), BoxCoding (training
  targets; decoding of the head's output to BoxDetection after NMS), BoxLoss (the training loss).
- heatmaps of the three model forms (Keras, int8 .tflite on TFLM, bundle): tinyvision.detection.runtime.
"""
from tinyvision.detection.anchors import kmeans_anchors, procedural_anchors
from tinyvision.detection.box_coding import BoxCoding
from tinyvision.detection.box_loss import BoxLoss
from tinyvision.detection.box_metrics import (BoxDetection, GroundTruth, MeanAveragePrecision, box_iou, coco_map,
                                              non_max_suppression, voc_map)
from tinyvision.detection.decode import Detection, decode_centroids, quantize_threshold
from tinyvision.detection.loss import CentroidLoss, centroid_loss
from tinyvision.detection.metrics import CentroidScore, match_centroids, score_detections

__all__ = ["Detection", "decode_centroids", "quantize_threshold", "CentroidLoss", "centroid_loss", "CentroidScore",
           "match_centroids", "score_detections", "BoxDetection", "GroundTruth", "MeanAveragePrecision", "box_iou",
           "coco_map", "non_max_suppression", "voc_map", "kmeans_anchors", "procedural_anchors", "BoxCoding", "BoxLoss"]
