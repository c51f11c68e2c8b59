"""Heatmaps of the same float images from a detector's three forms: Keras, int8 .tflite on TFLM, patch bundle.

The int8 forms return the raw int8 heatmaps with their output scale and zero point, which is what
the device decodes (``decode_centroids`` with ``quantize_threshold``); every TFLM run happens in one
isolated subprocess, as in ``tinyvision.runtime.classify``.
"""
import dataclasses
import os

import numpy as np

from tinyvision.errors import TinyVisionError
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
    """path: what the user named; kind: "float", "int8" or "bundle"; input_shape: (H, W, C); grid: (gh, gw);
    labels: per-channel names (background first; [] when the model has none); heatmaps: images -> Heatmaps."""

    path: str
    kind: str
    input_shape: tuple
    grid: tuple
    labels: list
    heatmaps: object

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    @property
    def stride(self):
        return self.input_shape[0] // self.grid[0]


def open_detector(path):
    """A Detector for a .keras/.h5 file, an int8 .tflite file or a bundle folder whose output is a
    per-cell heatmap [1, gh, gw, classes + 1]; TinyVisionError for anything else."""
    if os.path.isdir(path):
        from converters.patching import read_bundle

        bundle = read_bundle(path)
        shape = tuple(int(d) for d in bundle.models[bundle.tail].output_shape)
        return Detector(path, "bundle", tuple(int(d) for d in bundle.image["shape"]), _grid(shape, path),
                        list(bundle.labels), lambda images: bundle_heatmaps(bundle, images))
    if path.endswith((".keras", ".h5")):
        from converters.cli.common import load_keras

        model = load_keras(path)
        if len(model.inputs) != 1 or len(model.input_shape) != 4:
            raise TinyVisionError(f"{path} must take one image input [N, H, W, C], it takes {model.input_shape}")
        return Detector(path, "float", tuple(int(d) for d in model.input_shape[1:]), _grid(model.output_shape, path),
                        [], lambda images: Heatmaps(_keras_predict(model, images)))
    from converters.ir import Model
    from converters.quantize import read_labels
    from tinyvision.fileio import read_tflite_bytes

    data = read_tflite_bytes(path)
    graph = Model.from_bytes(data, os.path.basename(path)).main
    if len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 4:
        raise TinyVisionError(f"{path} must take one image input [1, H, W, C]")
    return Detector(path, "int8", tuple(int(d) for d in graph.inputs[0].shape[1:]),
                    _grid(graph.outputs[0].shape, path), read_labels(data),
                    lambda images: tflm_heatmaps(data, images, os.path.basename(path)))


def is_detector_output(shape):
    """Whether an output shape (with or without batch) is a per-cell heatmap: [(1,) gh, gw, >= 2]."""
    shape = tuple(shape)
    return len(shape) == 4 and shape[-1] >= 2 and shape[1] > 1


def _grid(shape, path):
    shape = tuple(shape)
    if not is_detector_output(shape):
        raise TinyVisionError(f"{path} outputs {shape}, not a per-cell heatmap [1, rows, columns, classes + 1]: "
                              "not a centroid detector")
    return int(shape[1]), int(shape[2])


def _keras_predict(model, images):
    return np.asarray(model.predict(np.asarray(images, np.float32), batch_size=32, verbose=0), np.float32)


def tflm_heatmaps(model_bytes, images, name="model", timeout=None):
    """Raw int8 heatmaps of an int8 detector on TFLM (one subprocess for all images)."""
    from tinyvision.runtime.tflm import require_int8

    require_int8(model_bytes, name)
    values, scale, zero_point = isolated.call(
        "tinyvision.runtime.classify:tflm_outputs_job", bytes(model_bytes), np.asarray(images, np.float32), name, timeout=timeout,
        who="TFLM", task=f"running {name} on {len(images)} images")
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
