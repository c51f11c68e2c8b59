"""Full-int8 TFLite conversion with TFLite metadata, and the quantization checks built on it.

:func:`to_int8_tflite` turns a Keras classifier -- a QAT model (tfmot-wrapped) or a plain
float model (post-training quantization) -- into a .tflite that TFLM runs with int8
kernels only: TFLITE_BUILTINS_INT8, int8 input and output, per-channel weights for
convolutions, and per-TENSOR weights for FULLY_CONNECTED by default, because the TFLM
shipped in the Arduino libraries runs FULLY_CONNECTED on CMSIS-NN, which reads a single
weight scale and silently ignores the rest.

The model carries tflite-support metadata (name, description, input normalization,
labels file, and for a box detector its anchors and coding as box_coding.json); metadata is built with the metadata schema's object API and inserted
through ``converters.ir`` so that weight buffers keep their 16-byte alignment. The
labels file travels as a zip appended after the flatbuffer (the tflite-support layout),
so a pass that re-exports the graph drops it: attach metadata last
(:func:`attach_metadata` re-attaches it to a rewritten model).
"""
import dataclasses
import io
import json
import warnings
import zipfile

import flatbuffers
import numpy as np

import tinyvision  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
from tensorflow_lite_support.metadata import metadata_schema_py_generated as _md
from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version
from tensorflow_lite_support.metadata.python import metadata as _metadata

from converters.ir import Model
from tinyvision.data.normalization import NORMALIZATION
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import check_tflite_bytes
from tinyvision.native_log import CONVERTER_NOISE, filtered_stderr, lite_interpreter
from tinyvision.runtime import tflm

DEFAULT_CALIBRATION_SAMPLES = 200
LABELS_FILE = "labels.txt"
BOX_CODING_FILE = "box_coding.json"  # a box detector's BoxCoding: what decodes its output into boxes
METADATA_NAME = _metadata.MetadataPopulator.METADATA_FIELD_NAME  # "TFLITE_METADATA"
_METADATA_IDENTIFIER = _metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER  # b"M001"


def to_int8_tflite(keras_model, representative_data, labels=None, normalization=NORMALIZATION,
                   per_channel_dense=False, name=None, description=None,
                   max_samples=DEFAULT_CALIBRATION_SAMPLES, box_coding=None):
    """Convert a single-input image classifier to full-int8 TFLite bytes with metadata.

    keras_model: tf.keras model, input [None, H, W, C] float, output [None, classes].
    representative_data: calibration images as the model sees them (normalized floats):
        an array [N, H, W, C], an (images, labels) tuple, a tf.data.Dataset of images or
        (images, labels), batched or not, or a callable returning such an iterable.
        The first ``max_samples`` images are used, one at a time.
    labels: class names, one per output (written as labels.txt, TENSOR_AXIS_LABELS).
    normalization: (mean, std) with input = (pixel - mean) / std, written to the
        metadata; None writes none and skips the input range check.
    per_channel_dense: keep TF's default per-channel FULLY_CONNECTED weights (not for
        CMSIS-NN targets; see :func:`per_channel_fully_connected`).
    box_coding: a box detector's ``BoxCoding``, stored in the metadata (``labels`` then name its
        object classes).
    """
    if not isinstance(keras_model, tf.keras.Model):
        raise TinyVisionError(
            f"expected a tf.keras (tf_keras) model, got {type(keras_model).__module__}.{type(keras_model).__name__}"
            " (import tinyvision before TensorFlow/Keras)")
    shape = _image_input_shape(keras_model)
    classes = _classes(keras_model) if box_coding is None else box_coding.classes
    if labels is not None and len(labels) != classes:
        raise TinyVisionError(f"{len(labels)} labels given for a model with {classes} "
                              f"{'outputs' if box_coding is None else 'classes'}")
    samples = representative_samples(representative_data, shape, max_samples, normalization)

    def representative():
        for sample in samples:
            yield [sample[None]]

    converter = int8_converter(keras_model, representative, per_channel_dense)
    try:
        with warnings.catch_warnings(), filtered_stderr(CONVERTER_NOISE):
            # QAT models carry their own ranges; the converter warns that the input has none.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            tflite = converter.convert()
    except Exception as e:  # the converter raises many types, with pages of MLIR diagnostics
        raise TinyVisionError(f"int8 conversion of {keras_model.name!r} failed: {_first_error_line(e)}") from None
    tflm.require_int8(tflite, keras_model.name)
    return attach_metadata(tflite, name or keras_model.name, description, labels, normalization, box_coding)


def int8_converter(keras_model, representative, per_channel_dense=False):
    """A ``tf.lite.TFLiteConverter`` for full-int8 (int8 input and output, builtin int8 ops only).

    representative: a callable yielding ``[float sample with batch 1]`` lists (calibration).
    per_channel_dense: keep TF's default per-channel FULLY_CONNECTED weights (else per-tensor).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    return converter


def representative_samples(data, shape, max_samples=DEFAULT_CALIBRATION_SAMPLES, normalization=NORMALIZATION):
    """Collect up to ``max_samples`` calibration images -> float32 [N, *shape].

    Accepts the same forms as :func:`to_int8_tflite`'s ``representative_data`` and
    checks shape and (with ``normalization``) that values are already normalized.
    """
    shape = tuple(shape)
    if max_samples < 1:
        raise TinyVisionError(f"max_samples must be >= 1, got {max_samples}")
    collected, count = [], 0
    for element in _elements(data):
        images = np.asarray(element, dtype=np.float32)
        if images.shape == shape:
            images = images[None]
        if images.shape[1:] != shape:
            raise TinyVisionError(f"representative data has shape {images.shape[1:]} per image; the model input is "
                                  f"{shape}")
        collected.append(images[: max_samples - count])
        count += len(collected[-1])
        if count >= max_samples:
            break
    if count == 0:
        raise TinyVisionError("representative data is empty: calibration needs at least one image")
    samples = np.concatenate(collected)
    if not np.all(np.isfinite(samples)):
        raise TinyVisionError("representative data contains NaN or infinite values")
    if normalization is not None:
        mean, std = normalization
        lo, hi = sorted(((0.0 - mean) / std, (255.0 - mean) / std))
        margin = 0.05 * (hi - lo)
        if samples.min() < lo - margin or samples.max() > hi + margin:
            raise TinyVisionError(
                f"representative data spans [{samples.min():.3g}, {samples.max():.3g}] but inputs normalized as "
                f"(pixel - {mean:g}) / {std:g} lie in [{lo:.3g}, {hi:.3g}]: normalize the images first")
    return samples


# --- checks on converted models ------------------------------------------------------------

def evaluate_int8(tflite_bytes, images, labels):
    """Top-1 accuracy of an int8 classifier on tf.lite.Interpreter.

    images: float32 [N, H, W, C] normalized as for the Keras model; they are quantized
    with the model's input scale/zero point, as the device would. labels: int [N].
    """
    interpreter = lite_interpreter(model_content=bytes(tflite_bytes))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero_point = inp["quantization"]
    if inp["dtype"] != np.int8 or scale == 0:
        raise TinyVisionError("evaluate_int8 needs a model with a quantized int8 input")
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if len(images) == 0 or len(images) != len(labels):
        raise TinyVisionError(f"evaluation data has {len(images)} images and {len(labels)} labels")
    quantized = np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)
    correct = 0
    for image, label in zip(quantized, labels):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    return correct / len(labels)


@dataclasses.dataclass(frozen=True)
class PerChannelDense:
    """A FULLY_CONNECTED op whose weights carry one scale per output channel."""

    subgraph: int
    op_index: int
    weights: str  # weight tensor name
    output_channels: int
    scales: int

    def __str__(self):
        return (f"FULLY_CONNECTED op {self.op_index} (subgraph {self.subgraph}, weights {self.weights!r}, "
                f"{self.output_channels} outputs) has per-channel weights ({self.scales} scales): CMSIS-NN kernels "
                f"use only the first scale, so results on Arduino will be wrong; convert with per-tensor dense "
                f"weights (the default of to_int8_tflite)")


def per_channel_fully_connected(tflite_bytes):
    """FULLY_CONNECTED ops whose weight quantization has more than one scale -> [PerChannelDense]."""
    found = []
    for s, graph in enumerate(Model.from_bytes(tflite_bytes).subgraphs):
        for index, op in enumerate(graph.ops):
            weights = op.inputs[1] if op.opcode == "FULLY_CONNECTED" and len(op.inputs) > 1 else None
            if weights is not None and weights.quantization is not None and weights.quantization.per_channel:
                found.append(PerChannelDense(s, index, weights.name, int(weights.shape[0]),
                                             int(weights.quantization.scale.size)))
    return found


# --- metadata --------------------------------------------------------------------------------

def attach_metadata(tflite_bytes, name, description=None, labels=None, normalization=NORMALIZATION,
                    box_coding=None):
    """Return ``tflite_bytes`` with image-classifier metadata (replacing any already there).

    The input tensor gets ImageProperties (RGB) and, unless ``normalization`` is None,
    NormalizationOptions(mean, std); the output gets ``labels`` as labels.txt
    (TENSOR_AXIS_LABELS) and a box detector's ``box_coding`` (a ``BoxCoding``) as box_coding.json
    (DESCRIPTIONS; its labels name the object classes). Models with several inputs/outputs get
    plain entries for the others.
    """
    model = Model.from_bytes(tflite_bytes)
    graph = model.main
    if labels is not None:
        labels = [str(label) for label in labels]
        if any("\n" in label or not label.strip() for label in labels):
            raise TinyVisionError("labels must be non-empty single-line strings")
        classes = graph.outputs[0].shape[-1] if graph.outputs[0].shape else 0
        classes = classes if box_coding is None else box_coding.classes
        if len(labels) != classes:
            raise TinyVisionError(f"{len(labels)} labels given for a model with {classes} "
                                  f"{'outputs' if box_coding is None else 'classes'}")
    meta = _md.ModelMetadataT()
    meta.name = name
    meta.description = description or _default_description(labels, normalization)
    inputs = [_tensor_metadata(t.name) for t in graph.inputs]
    inputs[0].content = _md.ContentT()
    inputs[0].content.contentPropertiesType = _md.ContentProperties.ImageProperties
    inputs[0].content.contentProperties = _md.ImagePropertiesT()
    inputs[0].content.contentProperties.colorSpace = _md.ColorSpaceType.RGB
    if normalization is not None:
        unit = _md.ProcessUnitT()
        unit.optionsType = _md.ProcessUnitOptions.NormalizationOptions
        unit.options = _md.NormalizationOptionsT()
        unit.options.mean = [float(normalization[0])]
        unit.options.std = [float(normalization[1])]
        inputs[0].processUnits = [unit]
    outputs = [_tensor_metadata(t.name) for t in graph.outputs]
    inputs[0].name = "image"
    outputs[0].name = "scores"
    files = {}
    if labels:
        files[LABELS_FILE] = "\n".join(labels) + "\n"
        outputs[0].associatedFiles = [_associated_file(LABELS_FILE, "Class names, one per line, in output order.",
                                                       _md.AssociatedFileType.TENSOR_AXIS_LABELS)]
    if box_coding is not None:
        files[BOX_CODING_FILE] = json.dumps(box_coding.to_dict())
        outputs[0].associatedFiles = (outputs[0].associatedFiles or []) + [_associated_file(
            BOX_CODING_FILE, "Box detector: anchors [[w, h], ...] in pixels, classes, stride "
            "(tinyvision.detection.BoxCoding).", _md.AssociatedFileType.DESCRIPTIONS)]
    subgraph = _md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = inputs
    subgraph.outputTensorMetadata = outputs
    meta.subgraphMetadata = [subgraph]
    meta.minParserVersion = _pywrap_metadata_version.GetMinimumMetadataParserVersion(_pack(meta))

    model.metadata[METADATA_NAME] = _pack(meta)
    data = model.to_bytes()
    if files:
        # The tflite-support layout: the flatbuffer, then a zip archive of the associated files.
        archive = io.BytesIO(data)
        with zipfile.ZipFile(archive, "a") as zf:
            for file_name, text in files.items():
                zf.writestr(file_name, text)
        data = archive.getvalue()
    return data


def read_metadata(tflite_bytes):
    """The metadata of a .tflite as a dict, or None if it has none.

    Keys: name, description, normalization ((mean, std) of the first input, or None),
    labels (list of class names, [] when no labels file is attached), box_coding (a box detector's
    ``BoxCoding``, else None).
    """
    check_tflite_bytes(tflite_bytes)
    buffer = _metadata.get_metadata_buffer(bytearray(tflite_bytes))
    if not buffer:
        return None
    try:
        meta = _md.ModelMetadataT.InitFromObj(_md.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
        displayer = _metadata.MetadataDisplayer.with_model_buffer(bytearray(tflite_bytes))
    except Exception as e:  # corrupt metadata raises whatever the generated parser hits
        raise TinyVisionError(f"unreadable TFLite metadata: {type(e).__name__}: {e}") from None
    normalization, labels, box_coding = None, [], None
    subgraph = meta.subgraphMetadata[0] if meta.subgraphMetadata else None
    if subgraph is not None and subgraph.inputTensorMetadata:
        for unit in subgraph.inputTensorMetadata[0].processUnits or []:
            if unit.optionsType == _md.ProcessUnitOptions.NormalizationOptions:
                normalization = (float(unit.options.mean[0]), float(unit.options.std[0]))
    if subgraph is not None:
        for tensor in subgraph.outputTensorMetadata or []:
            for f in tensor.associatedFiles or []:
                if f.type == _md.AssociatedFileType.TENSOR_AXIS_LABELS and not labels:
                    labels = _read_labels_file(displayer, _str(f.name))
                elif _str(f.name) == BOX_CODING_FILE:
                    box_coding = _read_box_coding(displayer)
    return {"name": _str(meta.name), "description": _str(meta.description), "normalization": normalization,
            "labels": labels, "box_coding": box_coding}


def read_labels(tflite_bytes):
    """The class names stored in a .tflite's labels file ([] when there are none)."""
    meta = read_metadata(tflite_bytes)
    return meta["labels"] if meta else []


# --- helpers -------------------------------------------------------------------------------

def _image_input_shape(keras_model):
    if len(keras_model.inputs) != 1:
        raise TinyVisionError(f"{keras_model.name!r} has {len(keras_model.inputs)} inputs; expected one image input")
    shape = tuple(keras_model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise TinyVisionError(f"{keras_model.name!r} input shape {shape} is not a fixed [height, width, channels]")
    return tuple(int(d) for d in shape)


def _classes(keras_model):
    # [batch, classes] for a classifier; [batch, rows, columns, classes] for a per-cell detector.
    if len(keras_model.outputs) != 1 or len(keras_model.outputs[0].shape) not in (2, 4):
        shapes = [tuple(o.shape) for o in keras_model.outputs]
        raise TinyVisionError(f"{keras_model.name!r} outputs {shapes}; expected one [batch, classes] or "
                              "[batch, rows, columns, classes] output")
    return int(keras_model.outputs[0].shape[-1])


def _elements(data):
    """Iterate over arrays of images (batched or single) found in ``data``."""
    if callable(data) and not isinstance(data, (np.ndarray, tf.data.Dataset)):
        data = data()
    if isinstance(data, np.ndarray):
        yield data
        return
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        yield data[0]  # (images, labels)
        return
    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    try:
        iterator = iter(data)
    except TypeError:
        raise TinyVisionError(f"representative data of type {type(data).__name__} is not an array, dataset or "
                              "iterable of images") from None
    for element in iterator:
        # (images, labels) pairs and the converter's [images] lists both carry images first.
        if isinstance(element, (tuple, list)):
            element = element[0]
        if isinstance(element, dict):
            raise TinyVisionError("representative data yields dicts; give images or (images, labels)")
        yield element


def _tensor_metadata(name):
    tensor = _md.TensorMetadataT()
    tensor.name = name
    tensor.content = _md.ContentT()
    tensor.content.contentPropertiesType = _md.ContentProperties.FeatureProperties
    tensor.content.contentProperties = _md.FeaturePropertiesT()
    return tensor


def _pack(meta):
    builder = flatbuffers.Builder(0)
    builder.Finish(meta.Pack(builder), _METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _default_description(labels, normalization):
    parts = ["Full-int8 image classifier"]
    if labels:
        parts.append(f"{len(labels)} classes")
    if normalization is not None:
        parts.append(f"input = (RGB pixel - {normalization[0]:g}) / {normalization[1]:g}")
    return "; ".join(parts) + "."


def _associated_file(file_name, description, file_type):
    entry = _md.AssociatedFileT()
    entry.name = file_name
    entry.description = description
    entry.type = file_type
    return entry


def _read_labels_file(displayer, file_name):
    return [line for line in _read_associated_file(displayer, file_name).splitlines() if line.strip()]


def _read_box_coding(displayer):
    from tinyvision.detection.box_coding import BoxCoding

    try:
        data = json.loads(_read_associated_file(displayer, BOX_CODING_FILE))
    except ValueError:
        raise TinyVisionError(f"the metadata's {BOX_CODING_FILE} is not JSON") from None
    return BoxCoding.from_dict(data, f"the metadata's {BOX_CODING_FILE}")


def _read_associated_file(displayer, file_name):
    try:
        return displayer.get_associated_file_buffer(file_name).decode("utf-8")
    except ValueError:
        raise TinyVisionError(f"metadata names {file_name} but the model carries no such file") from None


def _str(value):
    return value.decode("utf-8") if isinstance(value, bytes) else (value or "")


def _first_error_line(error):
    """The most telling line of a converter error (they can run to pages of MLIR notes)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line[line.index("error:") + 6:].strip()[:300]
    return (lines[0] if lines else type(error).__name__)[:300]
