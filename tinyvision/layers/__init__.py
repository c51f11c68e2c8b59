"""Keras design layers for memory-efficient CNNs (all lower to builtin int8 TFLite ops).

- InputSegmentation: image -> grid of overlapping patches (+ centre patch).
- InvertedResidual: the MobileNetV2 bottleneck block.
- ReorderedBottleneck: the same block computed in channel groups (1/G of the expanded
  tensor alive at a time).
- PatchTunnel: one path of blocks per patch, merged by pooling + concatenation.
- CentroidHead: per-cell class logits (background included) for centroid detection.
- BoxHead: per-cell, per-anchor box offsets, objectness and class scores (YOLO-style).
- flatten(model): the same model in builtin Keras layers, for tfmot QAT.
"""
from tinyvision.layers.bottleneck import InvertedResidual, ReorderedBottleneck
from tinyvision.layers.box_head import BoxHead
from tinyvision.layers.detection import CentroidHead
from tinyvision.layers.flatten import flatten
from tinyvision.layers.segmentation import InputSegmentation, segment_windows
from tinyvision.layers.tunnel import PatchTunnel

__all__ = ["BoxHead", "CentroidHead", "InputSegmentation", "InvertedResidual", "ReorderedBottleneck", "PatchTunnel",
           "flatten", "segment_windows"]
