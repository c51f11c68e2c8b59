"""One view of the three model forms a user classifies (or detects) with: Keras file, int8 .tflite, bundle folder."""
import dataclasses
import functools
import os

import numpy as np

from tinyvision.data.normalization import renormalize, to_model_channels
from tinyvision.errors import TinyVisionError

KINDS = {"float": "Keras (host)", "int8": "int8 on TFLM", "bundle": "bundle on PatchRunner (TFLM)"}


@dataclasses.dataclass
class Classifier:
    """path: what the user named; kind: "float", "int8" or "bundle"; input_shape: (H, W, C);
    num_classes: outputs; labels: class names from the model ([] when it has none);
    scores: float32 images [N, H, W, C] -> float32 scores [N, classes]."""

    path: str
    kind: str
    input_shape: tuple
    num_classes: int
    labels: list
    scores: object

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    def class_name(self, index):
        return self.labels[index] if index < len(self.labels) else f"class {index}"


def open_classifier(path):
    """A Classifier for a .keras/.h5 file, an int8 .tflite file or a bundle folder."""
    return as_classifier(open_model(path))


def as_classifier(model):
    """``model`` (what ``open_model`` gave) when it is a Classifier; a TinyVisionError naming its task if not."""
    from tinyvision.detection.runtime import BoxDetector

    path = model.path
    if isinstance(model, BoxDetector):
        raise TinyVisionError(f"{path} is a box detector (it outputs boxes per cell and anchor): evaluate it on "
                              "box data (--dataset=builtin_detection, voc:, coco: or tfrecord:)")
    if not isinstance(model, Classifier):
        raise TinyVisionError(f"{path} is a centroid detector (it outputs a per-cell heatmap): evaluate it on "
                              "--dataset=builtin_detection")
    return model


def open_model(path):
    """A Classifier, a ``tinyvision.detection.runtime.BoxDetector`` when the model carries a box coding (a
    BoxHead; the coding train stored in a QAT .h5; a .tflite's box_coding.json metadata; a bundle plan's
    box_coding), else a ``Detector`` when it outputs a per-cell heatmap [1, rows, columns, classes + 1], for a
    .keras/.h5 file, an int8 .tflite file or a bundle folder. Each takes tinyvision's images in [-1, 1] and feeds
    the model its own pixel normalization (metadata; plan.json; for a model trained elsewhere, p - 128 in int8)."""
    from tinyvision.detection import runtime as detection
    from tinyvision.runtime import classify

    if os.path.isdir(path):
        from converters.patching import read_bundle

        bundle = read_bundle(path)
        shape = tuple(int(d) for d in bundle.image["shape"])
        _check_one_output(path, len(bundle.models[bundle.tail].output_shapes))
        output = (1, *bundle.models[bundle.tail].output_shape)  # plan shapes leave out the batch
        fed = functools.partial(_fed, normalization=bundle.pixel_normalization, channels=shape[2])
        if bundle.box_coding:
            from tinyvision.detection import BoxCoding

            return detection.BoxDetector(path, "bundle", shape, BoxCoding.from_dict(bundle.box_coding),
                                         list(bundle.labels), fed(functools.partial(detection.bundle_heatmaps, bundle)))
        if detection.is_detector_output(output):
            return detection.Detector(path, "bundle", shape, tuple(int(d) for d in output[1:]), list(bundle.labels),
                                      fed(functools.partial(detection.bundle_heatmaps, bundle)))
        return Classifier(path, "bundle", shape, int(np.prod(output)), list(bundle.labels),
                          fed(functools.partial(classify.bundle_scores, bundle)))
    if path.endswith((".keras", ".h5")):
        from converters.cli.common import keras_box_coding, load_keras

        model = load_keras(path)
        if len(model.inputs) != 1 or len(model.input_shape) != 4:
            raise TinyVisionError(f"{path} must take one image input [N, H, W, C], it takes {model.input_shape}")
        _check_one_output(path, len(model.outputs))
        shape = tuple(int(d) for d in model.input_shape[1:])
        coding = keras_box_coding(model, path)

        def fed(run):  # tinyvision's own normalization: only a grey model's images change
            return lambda images: run(model, to_model_channels(images, shape[2]))

        if coding is not None:
            return detection.BoxDetector(path, "float", shape, coding, [], fed(detection.keras_heatmaps))
        if detection.is_detector_output(model.output_shape):
            return detection.Detector(path, "float", shape, tuple(int(d) for d in model.output_shape[1:]), [],
                                      fed(detection.keras_heatmaps))
        return Classifier(path, "float", shape, int(model.output_shape[-1]), [], fed(classify.keras_scores))
    from converters.ir import Model
    from converters.quantize import read_metadata
    from tinyvision.fileio import read_tflite_bytes

    data = read_tflite_bytes(path)
    graph = Model.from_bytes(data, os.path.basename(path)).main
    if len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 4:
        raise TinyVisionError(f"{path} must take one image input [1, H, W, C]")
    _check_one_output(path, len(graph.outputs))
    shape, output = tuple(int(d) for d in graph.inputs[0].shape[1:]), tuple(graph.outputs[0].shape)
    metadata = read_metadata(data) or {"labels": [], "box_coding": None, "normalization": None}
    labels, name = metadata["labels"], os.path.basename(path)
    fed = functools.partial(_fed, normalization=_tflite_normalization(graph.inputs[0], metadata["normalization"]),
                            channels=shape[2])
    if metadata["box_coding"] is not None:
        return detection.BoxDetector(path, "int8", shape, metadata["box_coding"], labels,
                                     fed(functools.partial(detection.tflm_heatmaps, data, name=name)))
    if detection.is_detector_output(output):
        return detection.Detector(path, "int8", shape, tuple(int(d) for d in output[1:]), labels,
                                  fed(functools.partial(detection.tflm_heatmaps, data, name=name)))
    return Classifier(path, "int8", shape, int(np.prod(output)), labels,
                      fed(functools.partial(classify.tflm_scores, data, name=name)))


def _check_one_output(path, count):
    if count != 1:
        raise TinyVisionError(f"{path} has {count} outputs: predict and evaluate read one (class scores, a heatmap "
                              "or a box grid); a model with several output heads needs its own decoder "
                              "(analyze, convert and export --arduino take it)")


def _fed(run, normalization, channels):
    """``run`` (float32 images -> outputs) on tinyvision's RGB images in [-1, 1] turned into the model's own input
    (its normalization; grey for a one-channel model)."""
    return lambda images: run(renormalize(to_model_channels(images, channels), normalization))


def _tflite_normalization(image_input, stored):
    """(mean, std) of a .tflite's pixels: its metadata's (``stored``), else for an int8 input (a model trained
    elsewhere) ``input_normalization``'s convention for the input's quantization, else tinyvision's."""
    from tinyvision.data.normalization import NORMALIZATION, input_normalization

    if stored is not None:
        return tuple(stored)
    quantization = image_input.quantization
    if image_input.dtype != np.int8 or quantization is None:
        return NORMALIZATION
    return input_normalization(None, float(quantization.scale.reshape(-1)[0]),
                               int(quantization.zero_point.reshape(-1)[0]))


def model_list(values):
    """--model given several times and/or as comma lists -> paths in order."""
    paths = [p.strip() for value in values or [] for p in value.split(",") if p.strip()]
    if not paths:
        raise TinyVisionError("--model is required")
    return paths
