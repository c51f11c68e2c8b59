"""Heatmaps of the same float images from a detector's three forms: Keras, int8 .tflite on TFLM, patch bundle.

The int8 forms return the raw int8 heatmaps with their output scale and zero point, which is what
the device decodes (``decode_centroids`` with ``quantize_threshold``); every TFLM run happens in one
isolated subprocess, as in ``tinyvision.runtime.classify``. A box detector's outputs (``BoxHead``: per cell
and anchor, box offsets, objectness and class scores) come back the same way, as a ``Heatmaps`` of its raw
output, and ``BoxDetector`` decodes them with the model's ``BoxCoding``.
"""
import dataclasses
import os

import numpy as np

from tinyvision.runtime import isolated
from tinyvision.runtime.classify import quantize_images


@dataclasses.dataclass
class Heatmaps:
    """values: [N, gh, gw, classes + 1], float probabilities (Keras) or raw int8 (TFLM, bundle);
    scale / zero_point: the int8 output's quantization (None for float)."""

    values: np.ndarray
    scale: float = None
    zero_point: int = None

    def detections(self, threshold=0.5, max_detections=None):
        """Per image, the decoded detections at probability ``threshold`` (int8: its int8 equivalent)."""
        from tinyvision.detection.decode import decode_centroids, quantize_threshold

        if self.scale is not None:
            threshold = quantize_threshold(threshold, self.scale, self.zero_point)
        return [decode_centroids(h, threshold, max_detections) for h in self.values]


@dataclasses.dataclass
class Detector:
    """What ``converters.cli.classifier.open_model`` gives for a detector. path: what the user named; kind:
    "float", "int8" or "bundle"; input_shape: (H, W, C); output_shape: (gh, gw, classes + 1); labels:
    per-channel names (background first; [] when the model has none); heatmaps: float32 images
    [N, H, W, C] -> Heatmaps."""

    path: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    labels: list
    heatmaps: object

    @property
    def grid(self):
        return self.output_shape[:2]

    @property
    def num_classes(self):
        """Heatmap channels: the object classes and the background."""
        return self.output_shape[2]

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    @property
    def stride(self):
        return self.input_shape[0] // self.grid[0]


@dataclasses.dataclass
class BoxDetector:
    """What ``converters.cli.classifier.open_model`` gives for an anchor-based box detector. path, kind,
    input_shape, labels as for Detector (labels name the object classes); coding: its BoxCoding; outputs:
    float32 images [N, H, W, C] -> Heatmaps of the raw head outputs [N, gh, gw, A * (5 + classes)]."""

    path: str
    kind: str
    input_shape: tuple
    coding: object
    labels: list
    outputs: object

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    @property
    def num_classes(self):
        return self.coding.classes

    def class_name(self, index):
        return self.labels[index] if index < len(self.labels) else f"class {index}"

    def detections(self, images, threshold, iou_threshold=0.5):
        """Per image, its [BoxDetection] by descending score, decoded as the device decodes (BoxCoding.decode)."""
        out = self.outputs(images)
        height, width = self.input_shape[:2]
        return [self.coding.decode(o, threshold, iou_threshold, scale=out.scale, zero_point=out.zero_point,
                                   image_size=(height, width)) for o in out.values]


def is_detector_output(shape):
    """Whether an output shape (batch first) is a per-cell heatmap: [batch, gh, gw, >= 2] with a grid of 2+ cells."""
    shape = tuple(shape)
    return len(shape) == 4 and shape[-1] >= 2 and shape[1] * shape[2] > 1


def keras_heatmaps(model, images):
    """Float heatmaps of a Keras detector (float or QAT fake-quant) on the host."""
    return Heatmaps(np.asarray(model.predict(np.asarray(images, np.float32), batch_size=32, verbose=0), np.float32))


def tflm_heatmaps(model_bytes, images, name="model", timeout=None):
    """Raw int8 heatmaps of an int8 detector on TFLM (one subprocess for all images)."""
    from tinyvision.runtime.tflm import require_int8

    require_int8(model_bytes, name)
    values, scale, zero_point = isolated.call(
        "tinyvision.runtime.classify:tflm_outputs_job", bytes(model_bytes), np.asarray(images, np.float32), name,
        timeout=timeout, who="TFLM", task=f"running {name} on {len(images)} images")
    return Heatmaps(values, scale, zero_point)


def bundle_heatmaps(bundle, images, timeout=None):
    """Raw int8 heatmaps of a patch bundle (a ``Bundle`` or a bundle folder) on the host PatchRunner."""
    from tinyvision.runtime.patch_runner import PatchRunner

    runner = PatchRunner(bundle)
    image = runner.bundle.image
    outputs = runner.run(quantize_images(images, image["scale"], image["zero_point"]), timeout=timeout)
    tail = runner.bundle.models[runner.bundle.tail].graph().outputs[0].quantization
    return Heatmaps(outputs.reshape(len(outputs), *outputs.shape[-3:]), float(tail.scale.reshape(-1)[0]),
                    int(tail.zero_point.reshape(-1)[0]))
