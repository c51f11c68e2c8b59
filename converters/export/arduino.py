"""Export a patch bundle (docs/bundle-format.md) as a complete Arduino sketch folder.

``export_arduino(bundle_dir, out_dir)`` writes ``<out_dir>/<sketch_name>/``::

    <sketch_name>.ino                        tflm_app/tinyvision_sketch.ino
    tinyvision_runtime.{h,cpp}               plan checks, window copy, output placement, preprocessing
    centroid_decoder.{h,cpp}                 detections of a centroid detector's int8 heatmap
    box_decoder.{h,cpp}                      a box detector's boxes (with NMS) from its int8 output; only
                                             for a box detector (plan.json box_coding) whose tail has one
                                             output
    box_config.h                             TINYVISION_BOX_DETECTOR and, for a box detector, its anchors,
                                             coding and the decoder's thresholds
    patch_runner_tflm.{h,cpp}                the TFLM glue (interpreters resident or one at a time, one arena)
    model_data.{h,cpp}                       every model in one alignas(16) flash image in which equal
                                             weights and quantization vectors are stored once
                                             (converters.export.flash_image)
    plan_data.{h,cpp}                        the plan as C data; kTinyVisionArenaSize = plan arena.size,
                                             kTinyVisionNumInterpreterSlots (1 for arena.interpreters
                                             "one_at_a_time", one per model for "resident")
    model_ops.h                              the MicroMutableOpResolver with exactly the models' operators
    test_image.{h,cpp}                       an int8 test image (built-in dataset, or the one given)
    README.md                                what the sketch prints, how to switch the image source and
                                             the board
    build_config.h                           TINYVISION_USE_CAMERA, and an #error for a camera build
                                             that does not fit the board's RAM

The board's limits are data (``converters.export.boards``). Static RAM (arena +
interpreter objects + op resolver + runtime globals) and flash (model arrays,
test image, plan tables, runtime code, TFLM + Arduino core) are computed and
printed; a bundle whose chosen build (test image in flash, or camera) does not
fit is refused with a TinyVisionError and nothing is written. The other build's
RAM is printed too, and build_config.h stops a camera build that would not fit
at compile time with a clear #error. Runtime code, plan tables and test image are measured with
``arm-none-eabi-g++`` + ``arm-none-eabi-size`` when the toolchain is on PATH,
else estimated. The sketch folder is built in a temporary folder next to the
destination and renamed into place.

The camera path of the sketch (``TINYVISION_USE_CAMERA``) turns RGB565 frames
into the model image on the device; ``pixel_lut``, ``center_crop`` and
``resize_nearest`` here compute exactly the same thing in numpy (float32
arithmetic, same integer index rules), and are what the test image goes
through when it is given as pixels.
"""
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from converters.export.boards import get_board
from converters.export.c_array import c_string
from tinyvision.data.normalization import NORMALIZATION, NORMALIZATION_MEAN, NORMALIZATION_STD
from tinyvision.errors import TinyVisionError
from tinyvision.fileio import read_bytes, replace_folder

# The device sources: tflm_app/ of a checkout (and of an editable install), or the same files installed
# with the package as converters/export/tflm_app (setup.py maps them there for wheels).
_HERE = os.path.dirname(os.path.abspath(__file__))
TFLM_APP_DIRS = (os.path.join(os.path.dirname(os.path.dirname(_HERE)), "tflm_app"), os.path.join(_HERE, "tflm_app"))
SKETCH_TEMPLATE = "tinyvision_sketch.ino"
BUILD_CONFIG = "build_config.h"
RUNTIME_FILES = ("tinyvision_runtime.h", "tinyvision_runtime.cpp", "patch_runner_tflm.h", "patch_runner_tflm.cpp",
                 "centroid_decoder.h", "centroid_decoder.cpp")
# No TFLM in these: measurable anywhere.
BOX_FILES = ("box_decoder.h", "box_decoder.cpp")  # a box detector's sketch only
PLAIN_SOURCES = ("tinyvision_runtime.cpp", "centroid_decoder.cpp", "box_decoder.cpp", "plan_data.cpp",
                 "test_image.cpp")
ARM_CXXFLAGS = ("-Os", "-std=c++17", "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections")

# RAM outside the arena, from sizeof() on Cortex-M4 (arm-none-eabi-g++ 12.2 against the TFLM headers of
# Chirale_TensorFlowLite 2.0.0 and Arduino_TensorFlowLite 2.4.0-ALPHA, which agree):
INTERPRETER_BYTES = 180  # tflite::MicroInterpreter: one InterpreterSlot per model (resident) or one in all
RESOLVER_BYTES, RESOLVER_BYTES_PER_OP = 12, 44  # tflite::MicroMutableOpResolver<N> = 12 + 44 N
# PatchRunner (220) + image source and view (40) + error state (8) + the detection list (16 x 8), rounded up
SKETCH_GLOBALS_BYTES = 400
BOX_DETECTIONS_BYTES = 16 * 24  # a box detector's sketch: kMaxBoxDetections tinyvision::BoxDetection of 24 B
# The box decoder's thresholds in a box detector's sketch: YOLOv5's detection defaults (score = objectness x
# class score; NMS drops a box overlapping a better one of its class by more).
BOX_SCORE_THRESHOLD, BOX_IOU_THRESHOLD = 0.25, 0.5
CAMERA_FRAME_BYTES = 160 * 120 * 2  # QQVGA RGB565 frame buffer of the camera build
CAMERA_EXTRA_BYTES = CAMERA_FRAME_BYTES + 256 + 64  # + pixel LUT + FrameImage
# Flash of the TFLM glue (patch_runner_tflm.cpp, 2,949 B text measured as above against
# Chirale_TensorFlowLite 2.0.0): it cannot be compiled here without TFLM's headers.
GLUE_CODE_BYTES = 3072
# Plan tables when they cannot be compiled: sizeof() on Cortex-M4 of tinyvision::ModelInfo / PatchInfo /
# PersistentSection / StageInfo / Dims (one per model output), and of Plan plus the class-name table's terminator.
PLAN_BYTES_PER_MODEL, PLAN_BYTES_PER_PATCH, PLAN_BYTES_PER_SECTION, PLAN_BYTES_PER_STAGE = 56, 44, 12, 28
PLAN_BYTES_PER_OUTPUT = 20
PLAN_FIXED_BYTES = 76
ALIGN = 16
# plan.json arena.interpreters -> tinyvision::InterpreterMode (absent: "resident").
INTERPRETER_MODES = {"resident": "kResident", "one_at_a_time": "kOneAtATime"}

# TFLite builtin operator -> MicroMutableOpResolver method (the same 99 methods in both Arduino libraries).
RESOLVER_METHODS = {
    "ADD": "AddAdd", "ARG_MAX": "AddArgMax", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "EXPAND_DIMS": "AddExpandDims",
    "FULLY_CONNECTED": "AddFullyConnected", "HARD_SWISH": "AddHardSwish", "L2_NORMALIZATION": "AddL2Normalization",
    "LEAKY_RELU": "AddLeakyRelu", "LOGISTIC": "AddLogistic", "MAX_POOL_2D": "AddMaxPool2D", "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "PACK": "AddPack",
    "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax", "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "SHAPE": "AddShape", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv", "UNPACK": "AddUnpack",
}

_SKETCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_]{0,62}\Z")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What ``export_arduino`` wrote and the memory it computed (bytes)."""

    sketch_dir: str
    board: str
    interpreters: str  # the bundle's arena.interpreters: "resident" or "one_at_a_time"
    camera: bool  # the build chosen at export: camera frames (True) or the test image in flash
    ram_bytes: int  # static RAM of the flash test image build
    board_ram_bytes: int  # the board's RAM
    ram_available: int  # board RAM minus the reserve for stack and core
    camera_ram_bytes: int  # the same with TINYVISION_USE_CAMERA
    flash_bytes: int
    flash_available: int
    ram: dict  # breakdown
    flash: dict  # breakdown
    arm_size: dict  # {"text", "data", "bss", "sources"} of the plain sources, or None without the toolchain

    @property
    def camera_fits(self):
        return self.camera_ram_bytes <= self.ram_available

    def summary(self):
        ram = ", ".join(f"{k} {v:,}" for k, v in self.ram.items())
        flash = ", ".join(f"{k} {v:,}" for k, v in self.flash.items())
        measured = (f"arm-none-eabi-size of {' + '.join(self.arm_size['sources'])}: "
                    f"text {self.arm_size['text']:,}, data {self.arm_size['data']:,}, bss {self.arm_size['bss']:,}"
                    if self.arm_size else "no arm-none-eabi toolchain: runtime size estimated")
        camera = f"camera build {self.camera_ram_bytes:,} B"
        if not self.camera_fits:
            camera += " (does not fit: build_config.h stops it compiling)"
        return (f"sketch {self.sketch_dir} ({self.board}, interpreters {self.interpreters}, "
                f"{'camera' if self.camera else 'test image in flash'})\n"
                f"  RAM   {self.ram_bytes:,} of {self.ram_available:,} B available: {ram}; {camera}\n"
                f"  flash {self.flash_bytes:,} of {self.flash_available:,} B: {flash}\n"
                f"  {measured}")


def export_arduino(bundle_dir, out_dir, board="nano33ble", test_image=None, sketch_name=None, class_names=None,
                   camera=False, verbose=True, test_label=None):
    """Write ``<out_dir>/<sketch_name>/`` for the bundle at ``bundle_dir``; returns an ``ExportReport``.

    board: a name from ``converters.export.boards.BOARDS`` or a ``BoardProfile``.
    test_image: None (a sample of the built-in dataset at the bundle's resolution), a path to an
        image file, uint8 pixels (h, w, 3) or (h, w) of any size (centre-cropped and resized like the
        camera path), or int8 (H, W, C) already quantized with the bundle's image quantization.
    sketch_name: folder and .ino name; default "tinyvision_<bundle folder name>".
    class_names: one name per model output, printed by the sketch; default the bundle's labels (its
        source model's metadata), else the built-in dataset's names when the test image comes from it
        and the class count matches, else none. A tail with several outputs (a detector with one per
        scale) has none: the sketch prints each output's largest value, and class_names or test_label
        given for it is refused.
    test_label: the test image's class (an index or a class name) printed as the expected label;
        default: the built-in image's own label, or for an image file in a folder named after a
        class (a folder: dataset's layout), that class; else unknown (-1).
    camera: make the camera build (TINYVISION_USE_CAMERA 1) the sketch's default; its RAM must fit.
    verbose: print the memory summary.
    Raises TinyVisionError for an invalid bundle, an unknown board, an operator the Arduino TFLM
    library cannot register, or a bundle that does not fit the board.
    """
    profile = get_board(board)
    bundle = load_for_export(bundle_dir)
    if not bundle.arena:
        raise TinyVisionError(f"{bundle_dir}: the bundle has no arena layout (plan.json 'arena')")
    _refuse_per_channel_dense(bundle, bundle_dir)
    name = _sketch_name(bundle_dir, sketch_name)
    image, label, default_names = prepare_test_image(bundle, test_image)
    outputs = bundle.models[bundle.tail].output_shapes
    if len(outputs) > 1:
        # The sketch prints each output's largest value: class names and labels belong to one output's classes.
        for given, what in ((class_names, "class names"), (test_label, "a test label")):
            if given is not None:
                raise TinyVisionError(f"{what} given for a model with {len(outputs)} outputs: class names and test "
                                      f"labels apply to a single-output model only")
        names, label = [], -1
    else:
        output = tuple(outputs[0])
        # A box detector's class names name its object classes; a centroid detector's its heatmap channels.
        num_classes = (bundle.box_coding["classes"] if bundle.box_coding else
                       int(output[-1]) if _is_heatmap(output) else int(np.prod(output)))
        if bundle.labels and default_names is not None and list(default_names) != list(bundle.labels):
            label = -1  # a built-in sample says nothing about the classes of the user's model
        names = _class_names(class_names, bundle.labels or default_names, num_classes)
        label = _test_label(test_label, label, test_image, names, num_classes)
    files = render_sketch(bundle, name, image, label, names)

    out_dir = os.path.abspath(os.fspath(out_dir))
    target = os.path.join(out_dir, name)
    if os.path.exists(target) and not _is_sketch(target, name):
        raise TinyVisionError(f"{target} exists and is not a tinyvision sketch: refusing to replace it")
    created = not os.path.exists(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.tmp-")
    except OSError as e:
        raise TinyVisionError(f"cannot write {target}: {e.strerror or e}") from None
    written = False
    try:
        for file_name, text in files.items():
            with open(os.path.join(tmp, file_name), "w", encoding="utf-8") as f:
                f.write(text)
        os.chmod(tmp, 0o755)
        report = _memory_report(bundle, profile, tmp, target, image, files, camera)
        with open(os.path.join(tmp, BUILD_CONFIG), "w", encoding="utf-8") as f:
            f.write(render_build_config(report))
        if verbose:
            print(report.summary())
        _check_fit(report, profile)
        replace_folder(tmp, target)
        written = True
    except OSError as e:
        raise TinyVisionError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not written and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a refused export leaves no trace
    return report


def _refuse_per_channel_dense(bundle, bundle_dir):
    """The Arduino TFLM runs FULLY_CONNECTED on CMSIS-NN, which reads one weight scale: a per-channel
    dense layer would give wrong scores on the board, so it is refused with the fix."""
    from converters.quantize import per_channel_fully_connected

    for m in bundle.models:
        found = per_channel_fully_connected(m.data)
        if found:
            raise TinyVisionError(
                f"{bundle_dir}: {m.file} has per-channel FULLY_CONNECTED weights ({found[0].weights!r}), which the "
                f"Arduino TFLM's CMSIS-NN kernel runs with one scale (wrong scores): convert the source again "
                f"with --per_tensor_dense (it requantizes them per-tensor and reports the change)")


def load_for_export(path):
    """The bundle at ``path``, or a plain .tflite file wrapped as a whole_model bundle (measured on TFLM; a box
    detector's coding and the pixel normalization taken from its metadata, as convert puts them into a bundle's
    plan)."""
    from converters.patching import read_bundle, whole_model
    from converters.patching.bundle import finalize

    if not os.path.isfile(path):
        return read_bundle(path)
    from converters.quantize import read_metadata
    from tinyvision.fileio import read_tflite_bytes

    data = read_tflite_bytes(path)
    bundle = finalize(whole_model(data, os.path.basename(path)))
    metadata = read_metadata(data) or {"box_coding": None, "normalization": None}
    bundle.box_coding = None if metadata["box_coding"] is None else metadata["box_coding"].to_dict()
    bundle.take_normalization(metadata["normalization"])
    return bundle


def fit_report(bundle, board="nano33ble"):
    """The ``ExportReport`` ``export_arduino`` would make for a finalized ``bundle`` (default test image, no
    camera), without writing a sketch: what the converter checks before it picks a bundle."""
    profile = get_board(board)
    image, label, _ = prepare_test_image(bundle)
    files = render_sketch(bundle, "tinyvision_fit", image, label, [])
    with tempfile.TemporaryDirectory(prefix="tinyvision-fit-") as folder:
        for file_name, text in files.items():
            if file_name in PLAIN_SOURCES or file_name.endswith(".h"):  # what arm_size compiles
                with open(os.path.join(folder, file_name), "w", encoding="utf-8") as f:
                    f.write(text)
        return _memory_report(bundle, profile, folder, folder, image, files, False)


def fits_board(report):
    """Why an ``ExportReport`` does not fit its board (one line), or None when it fits."""
    try:
        _check_fit(report, get_board(report.board))
    except TinyVisionError as e:
        return str(e)
    return None


# ---------------------------------------------------------------- test image (numpy mirror of the device path)


def pixel_lut(scale, zero_point, mean=NORMALIZATION_MEAN, std=NORMALIZATION_STD):
    """int8[256]: pixel p -> quantize((p - mean) / std), as tinyvision::BuildPixelLut computes it.

    float32 throughout and round half away from zero as floor(|v| + 0.5), clamped to int8.
    """
    p = np.arange(256, dtype=np.float32)
    v = ((p - np.float32(mean)) / np.float32(std)) / np.float32(scale)
    r = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(-v + np.float32(0.5)))
    r = np.clip(r, -128 - int(zero_point), 127 - int(zero_point))
    return (r.astype(np.int32) + int(zero_point)).astype(np.int8)


def center_crop(frame_w, frame_h, out_w, out_h):
    """(x, y, w, h): the largest centred region with the out aspect ratio (tinyvision::CenterCrop)."""
    w, h = frame_w, frame_h
    if frame_w * out_h > frame_h * out_w:
        w = frame_h * out_w // out_h
    else:
        h = frame_w * out_h // out_w
    w, h = max(w, 1), max(h, 1)
    return (frame_w - w) // 2, (frame_h - h) // 2, w, h


def resize_nearest(pixels, crop, out_h, out_w):
    """pixels (H, W, ...) -> (out_h, out_w, ...): row crop.y + y * crop.h // out_h, same for columns."""
    x, y, w, h = crop
    rows = y + (np.arange(out_h, dtype=np.int64) * h) // out_h
    cols = x + (np.arange(out_w, dtype=np.int64) * w) // out_w
    return pixels[rows][:, cols]


def to_channels(pixels, channels):
    """uint8 (H, W, 3) or (H, W) -> (H, W, channels): grey = (77 R + 150 G + 29 B) >> 8, grey -> RGB by repetition."""
    pixels = np.asarray(pixels, np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] == channels:
        return pixels
    if pixels.shape[-1] == 1 and channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] == 3 and channels == 1:
        rgb = pixels.astype(np.uint32)
        return ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8).astype(np.uint8)[..., None]
    raise TinyVisionError(f"cannot turn {pixels.shape[-1]}-channel pixels into a {channels}-channel image")


def pixels_to_image(pixels, shape, scale, zero_point, normalization=NORMALIZATION):
    """uint8 pixels of any size -> int8 (H, W, C) model image, exactly as the sketch's camera path;
    normalization: the model's (mean, std) (``Bundle.pixel_normalization``)."""
    pixels = np.asarray(pixels)
    H, W, C = shape
    crop = center_crop(pixels.shape[1], pixels.shape[0], W, H)
    resized = to_channels(resize_nearest(pixels, crop, H, W), C)
    return pixel_lut(scale, zero_point, *normalization)[resized]


def prepare_test_image(bundle, test_image=None):
    """(int8 image (H, W, C), label or -1, class names of its dataset or None) for the sketch."""
    from tinyvision.data import SHAPE_CLASSES, class_names, render_sample

    H, W, C = (int(d) for d in bundle.image["shape"])
    pixel_mapping = float(bundle.image["scale"]), int(bundle.image["zero_point"]), bundle.pixel_normalization
    if test_image is None:
        outputs = bundle.models[bundle.tail].output_shapes
        output = tuple(outputs[0])  # a detector with one output per scale: the grid of the first
        several = len(outputs) > 1
        if _is_heatmap(output) and H == W and H % output[0] == 0 and output[0] >= 4:
            # A centroid detector: the first scene of the built-in detection data's test split with objects in it.
            from tinyvision.data.detection import DETECTION_CLASSES, detection_class_names, render_detection_sample

            stride = H // output[0]
            scenes = (render_detection_sample(i, resolution=H, split="test", stride=stride) for i in range(1, 99))
            pixels = next(s for s in scenes if len(s.classes)).image
            names = DETECTION_CLASSES if bundle.box_coding else detection_class_names()  # no background class
            return pixels_to_image(pixels, (H, W, C), *pixel_mapping), -1, None if several else list(names)
        if several:  # no classes to draw a sample of
            pixels, _ = render_sample(1, resolution=max(H, W), split="test", variant="shapes")
            return pixels_to_image(pixels, (H, W, C), *pixel_mapping), -1, None
        classes = int(np.prod(output))
        if classes == 2:
            variant, subset = "vww", None
        elif 2 < classes < len(SHAPE_CLASSES):
            variant, subset = "shapes", SHAPE_CLASSES[:classes]
        else:
            variant, subset = "shapes", None
        pixels, label = render_sample(1, resolution=max(H, W), split="test", variant=variant, classes=subset)
        names = class_names(variant, subset)
        if len(names) != classes:
            names, label = None, -1
        return pixels_to_image(pixels, (H, W, C), *pixel_mapping), int(label), names
    if isinstance(test_image, (str, os.PathLike)):
        return pixels_to_image(_decode_image_file(test_image), (H, W, C), *pixel_mapping), -1, None
    x = np.asarray(test_image)
    if x.dtype == np.int8:
        if x.shape != (H, W, C):
            raise TinyVisionError(f"an int8 test image must be the bundle's image shape {(H, W, C)}, got {x.shape}")
        return np.ascontiguousarray(x), -1, None
    if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] not in (1, 3)) or 0 in x.shape:
        raise TinyVisionError(f"test image pixels must be uint8 (h, w, 3) or (h, w), got {x.dtype.name} {x.shape}")
    return pixels_to_image(x, (H, W, C), *pixel_mapping), -1, None


def _decode_image_file(path):
    path = os.fspath(path)
    encoded = read_bytes(path, "test image")
    import tinyvision  # noqa: F401  (Keras environment before TensorFlow)
    import tensorflow as tf

    try:
        return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        raise TinyVisionError(f"test image {path} is not a decodable image: {getattr(e, 'message', e)}") from None


def _is_heatmap(output):
    """Whether a tail output shape (no batch) is a centroid detector's per-cell heatmap, as the sketch decides."""
    return len(output) == 3 and output[0] * output[1] > 1


def decodes_boxes(bundle):
    """Whether the sketch decodes boxes: a box coding (plan.json box_coding) and a tail with one output, the one
    the box decoder reads. A tail with several outputs gets each output's largest value printed instead."""
    return bool(bundle.box_coding) and len(bundle.models[bundle.tail].output_shapes) == 1


def _class_names(given, default, num_classes):
    if given is None:
        return list(default) if default is not None and len(default) == num_classes else []
    given = [str(n) for n in given]
    if len(given) != num_classes:
        raise TinyVisionError(f"{len(given)} class names given, the model has {num_classes} outputs")
    return given


def _test_label(given, default, test_image, names, num_classes):
    """The expected class index of the test image (-1 unknown); see ``export_arduino``'s test_label."""
    if given is None:
        if isinstance(test_image, (str, os.PathLike)):
            folder = os.path.basename(os.path.dirname(os.path.abspath(os.fspath(test_image))))
            return names.index(folder) if folder in names else -1
        return default
    if isinstance(given, str) and given in names:
        return names.index(given)
    try:
        index = int(given)
    except (TypeError, ValueError):
        raise TinyVisionError(f"test label {given!r} is not a class name ({', '.join(names) or 'the model has none'})"
                              " nor an index") from None
    if not 0 <= index < num_classes:
        raise TinyVisionError(f"test label {index} is not a class index of a {num_classes}-class model")
    return index


# ---------------------------------------------------------------- rendering


def render_sketch(bundle, sketch_name, image, label, class_names):
    """{file name: text} of the whole sketch folder."""
    files = {f"{sketch_name}.ino": _read_app(SKETCH_TEMPLATE)}
    for file_name in RUNTIME_FILES + (BOX_FILES if decodes_boxes(bundle) else ()):
        files[file_name] = _read_app(file_name)
    files["box_config.h"] = render_box_config(bundle)
    flash = model_image(bundle)
    files["model_data.h"], files["model_data.cpp"] = render_model_image(bundle, flash)
    files["plan_data.h"], files["plan_data.cpp"] = render_plan_data(bundle, flash, class_names)
    files["model_ops.h"] = render_model_ops(bundle)
    files["test_image.h"], files["test_image.cpp"] = render_test_image(image, label)
    files["README.md"] = render_readme(bundle, sketch_name, label, class_names)
    return files


def render_readme(bundle, sketch_name, label, class_names):
    """The sketch folder's README.md: what it runs and prints, and the two switches a user turns."""
    H, W, C = (int(d) for d in bundle.image["shape"])
    outputs = bundle.models[bundle.tail].output_shapes
    classes = (f"none (the model has {len(outputs)} outputs)" if len(outputs) > 1 else
               ", ".join(f"{i} {n}" for i, n in enumerate(class_names)) or "indices only (the model has no labels)")
    expected = (f"{label} ({class_names[label]})" if 0 <= label < len(class_names) else
                str(label) if label >= 0 else "-1 (unknown)")
    return f"""# {sketch_name}

Written by `tinyvision export --arduino`: a {len(bundle.patches)}-patch bundle ({len(bundle.stages)} patch
stage(s), {len(bundle.models)} model(s), {bundle.arena.get("interpreters", "resident")} interpreters) classifying
{H}x{W}x{C} int8 images with TensorFlow Lite Micro in one {bundle.arena["size"]:,} B tensor arena.

## Build and upload (Arduino Nano 33 BLE)

```sh
arduino-cli core install arduino:mbed_nano
arduino-cli lib install Chirale_TensorFlowLite            # and Arduino_OV767X for the camera build
arduino-cli compile --fqbn arduino:mbed_nano:nano33ble {sketch_name}
arduino-cli upload  --fqbn arduino:mbed_nano:nano33ble -p /dev/ttyACM0 {sketch_name}
arduino-cli monitor -p /dev/ttyACM0
```

## What it prints

Once a second, one line per inference on Serial (USB):

```
class=<index> (<name>) score=<dequantized score> label=<expected class> (<name>) latency_ms=<all>
  patches_ms=<patch stages> tail_ms=<tail> copy_ms=<copying windows and outputs> create_ms=<interpreter
  creation> arena_used=<bytes>/<arena size>
```

and `tinyvision error: <cause> (index <i>)` when the plan or TFLM fails. Classes: {classes}.
The test image in flash (`test_image.cpp`) is class {expected}; `label=` is printed for it only.
A centroid detector (its tail outputs a heatmap) prints `detections=<n>` in place of `class=... label=...`,
then one `detection class=<index> (<name>) x=<cell column> y=<cell row> score=<probability>` line per detection.
A box detector (`box_config.h`: its anchors and coding) prints `detections=<n>` too, then one
`detection class=<index> (<name>) box=<x0>,<y0>,<x1>,<y1> score=<objectness x class score>` line per box (pixels of
the model input; score >= kTinyVisionBoxScoreThreshold, class-wise NMS at IoU kTinyVisionBoxIouThreshold).
A model with several outputs (a detector with one output per scale) has no classes and no decoder on the board: it
prints one `output=<i> shape=<h>x<w>x<c> max=<largest value, dequantized> at=<its flat index>` line per output, in
the model's output order, then `outputs=<n>` in place of `class=... label=...`.

## Switch the image source

`build_config.h` sets `TINYVISION_USE_CAMERA`: 0 classifies the test image in flash, 1 classifies OV7675
camera frames (Nano 33 BLE Sense tinyML kit, Arduino_OV767X library), centre-cropped and resized on the board.
A camera build that does not fit the board's RAM stops with a compile-time `#error`. To put another image in
flash, export again with `--test_image=FILE` (and `--test_label=NAME`), or `--camera` for the camera build.

## Change the board

The memory checks of the export (RAM, flash) come from a board profile: export again with
`tinyvision export --arduino --board=NAME` (profiles: `converters/export/boards.py`). The sketch itself uses
only the Arduino core, Serial and TFLM; `#define TINYVISION_ARDUINO_TENSORFLOWLITE` at the top of
`{sketch_name}.ino` builds it against the older Arduino_TensorFlowLite library instead of Chirale_TensorFlowLite.
Compile with that board's FQBN (`arduino-cli board listall`).
"""


def model_image(bundle):
    """The ``FlashImage`` of the bundle's models, in plan order."""
    from converters.export.flash_image import pack_models

    return pack_models([m.data for m in bundle.models])


def render_model_image(bundle, flash):
    """(model_data.h, model_data.cpp): the bundle's ``FlashImage`` as one 16-byte aligned array."""
    from converters.export.c_array import c_bytes

    starts = [f"//   {o:>9,}  {m.file} ({len(m.data):,} B as a file)" for m, o in zip(bundle.models, flash.offsets)]
    header = "\n".join([
        "// Generated by tinyvision (converters.export.arduino): the bundle's models as one flash image. Do not edit.",
        "#ifndef TINYVISION_MODEL_DATA_H_",
        "#define TINYVISION_MODEL_DATA_H_",
        "",
        "// Each model is a whole .tflite flatbuffer starting at its offset; models refer forward to the",
        "// weights and quantization vectors they share with the models after them, so the image holds every",
        "// equal vector once. 16-byte aligned because TFLM reads weights in place.",
        "alignas(16) extern const unsigned char kTinyVisionModels[];",
        f"constexpr unsigned int kTinyVisionModelsSize = {len(flash.data)}u;",
        "// Model offsets:",
        *starts,
        "",
        "#endif  // TINYVISION_MODEL_DATA_H_",
        "",
    ])
    source = "\n".join([
        "// Generated by tinyvision (converters.export.arduino). Do not edit.",
        '#include "model_data.h"',
        "",
        f"alignas(16) const unsigned char kTinyVisionModels[] = {{\n{c_bytes(flash.data)}\n}};",
        "",
    ])
    return header, source


def render_box_config(bundle):
    """box_config.h: whether the sketch decodes boxes and, for a box detector, what BoxDecoderConfig needs (the
    plan's box_coding, the image size the boxes are clipped to, the thresholds). Floats are written as hex
    literals, so the device decodes with exactly the float32 values Python's BoxCoding uses."""
    lines = ["// Generated by tinyvision (converters.export.arduino). Do not edit.",
             "#ifndef TINYVISION_BOX_CONFIG_H_", "#define TINYVISION_BOX_CONFIG_H_", ""]
    coding = bundle.box_coding
    if coding and not decodes_boxes(bundle):
        lines += ["// A box coding for a tail with several outputs: the box decoder reads one, so the sketch",
                  "// prints each output's largest value instead.",
                  "#define TINYVISION_BOX_DETECTOR 0"]
    elif not coding:
        lines += ["// Not a box detector: the sketch prints class scores or centroid detections.",
                  "#define TINYVISION_BOX_DETECTOR 0"]
    else:
        H, W, _ = (int(d) for d in bundle.image["shape"])
        anchors = ", ".join(_float_literal(v) for a in coding["anchors"] for v in a)
        lines += ["// A box detector (tinyvision.detection.BoxCoding): anchors (w, h) in input pixels, object classes,",
                  "// pixels per cell; boxes are clipped to the image; YOLOv5's score and NMS IoU thresholds.",
                  "#define TINYVISION_BOX_DETECTOR 1",
                  "#include <stdint.h>",
                  f"constexpr uint32_t kTinyVisionBoxAnchors = {len(coding['anchors'])};",
                  f"constexpr float kTinyVisionBoxAnchorSizes[] = {{{anchors}}};",
                  f"constexpr uint32_t kTinyVisionBoxClasses = {coding['classes']};",
                  f"constexpr float kTinyVisionBoxStride = {_float_literal(coding['stride'])};",
                  f"constexpr float kTinyVisionImageWidth = {_float_literal(W)};",
                  f"constexpr float kTinyVisionImageHeight = {_float_literal(H)};",
                  f"constexpr float kTinyVisionBoxScoreThreshold = {_float_literal(BOX_SCORE_THRESHOLD)};",
                  f"constexpr double kTinyVisionBoxIouThreshold = {float(BOX_IOU_THRESHOLD).hex()};"]
    return "\n".join(lines + ["", "#endif  // TINYVISION_BOX_CONFIG_H_", ""])


def _float_literal(value):
    """A C++ float literal of exactly float32(value)."""
    return float(np.float32(value)).hex() + "f"


def render_plan_data(bundle, flash, class_names=()):
    """(plan_data.h, plan_data.cpp): the plan as tinyvision::Plan constants in flash.

    flash: the ``FlashImage`` of the bundle's models (``kTinyVisionModels``, declared by model_data.h).
    Sizes are written as literals so the whole Plan is constant-initialized (no start-up code, no RAM).
    """
    H, W, C = (int(d) for d in bundle.image["shape"])
    arena = bundle.arena
    mode = interpreter_mode(bundle)
    pixel_mean, pixel_std = bundle.pixel_normalization
    header = "\n".join([
        "// Generated by tinyvision (converters.export.arduino) from plan.json. Do not edit.",
        "#ifndef TINYVISION_PLAN_DATA_H_",
        "#define TINYVISION_PLAN_DATA_H_",
        "",
        "#include <stdint.h>",
        "",
        '#include "tinyvision_runtime.h"',
        "",
        "// ARENA_SIZE: the one tensor arena all interpreters share (plan.json arena.size, measured by the converter).",
        f"constexpr uint32_t kTinyVisionArenaSize = {int(arena['size'])};",
        f"constexpr uint16_t kTinyVisionNumModels = {len(bundle.models)};",
        f"// arena.interpreters \"{mode}\": interpreter objects alive at once.",
        f"constexpr uint16_t kTinyVisionNumInterpreterSlots = {interpreter_slots(bundle)};",
        f"constexpr uint32_t kTinyVisionNumClassNames = {len(class_names)};",
        "// Pixel normalization of the model's training: (p - mean) / std (plan.json normalization; absent:",
        "// tinyvision's own, tinyvision.data.normalization).",
        f"constexpr float kTinyVisionPixelMean = {_c_float(pixel_mean)};",
        f"constexpr float kTinyVisionPixelStd = {_c_float(pixel_std)};",
        "",
        "extern const tinyvision::Plan kTinyVisionPlan;",
        "extern const char* const kTinyVisionClassNames[];",
        "",
        "#endif  // TINYVISION_PLAN_DATA_H_",
        "",
    ])
    models, outputs, in_place_models = [], [], set(arena.get("in_place", []))
    for i, (m, offset) in enumerate(zip(bundle.models, flash.offsets)):
        role = "kTail" if m.role == "tail" else "kPatch"
        # Every model's output shapes in one table: a model points at its first and counts them.
        first = len(outputs)
        outputs += [f"    {_c_dims(shape)},  // model {i} output {j}" for j, shape in enumerate(m.output_shapes)]
        models.append(f"    {{{c_string(m.name)}, kTinyVisionModels + {offset}u, {len(flash.data) - offset}u, "
                      f"tinyvision::ModelRole::{role}, {_c_dims(m.input_shape)}, kOutputs + {first}, "
                      f"{len(m.output_shapes)}, {int(m.nonpersistent_bytes or 0)}u, {int(m.persistent_bytes or 0)}u, "
                      f"{'true' if i in in_place_models else 'false'}}},")
    patches = []
    for p in bundle.patches:
        w, o = p.window, p.output
        # An explicit source (the image, -1, or an earlier stage) follows; absent: PatchInfo's kStageBefore.
        source = "" if p.source is None else f", {int(p.source)}"
        patches.append(f"    {{{p.model}, {p.stage}, {{{w.x}u, {w.y}u, {w.w}u, {w.h}u}}, "
                       f"{{{o.x}u, {o.y}u, {o.c}u, {o.w}u, {o.h}u, {o.channels}u}}{source}}},")
    if len(arena["stages"]) != len(bundle.stages):
        raise TinyVisionError(f"the arena has {len(arena['stages'])} stage sections for {len(bundle.stages)} stages")
    stages = []
    for stage, section in zip(bundle.stages, arena["stages"]):
        Hs, Ws, Cs = (int(d) for d in stage["shape"])
        stages.append(f"    {{{{{Hs}u, {Ws}u, {Cs}u}}, {{{_c_float(stage['scale'])}, {int(stage['zero_point'])}}}, "
                      f"{{{int(section['offset'])}u, {int(section['size'])}u}}}},")
    sections = [f"    {{{s['model']}, {{{int(s['offset'])}u, {int(s['size'])}u}}}},"
                for s in sorted(arena["persistent"], key=lambda s: s["model"])]
    names = [f"    {c_string(n)}," for n in class_names] or ["    nullptr,  // no class names"]
    shared = arena["shared"]
    tail_in_place = "true" if arena.get("offline_plans", True) else "false"
    source = "\n".join([
        "// Generated by tinyvision (converters.export.arduino) from plan.json. Do not edit.",
        '#include "plan_data.h"',
        "",
        '#include "model_data.h"',
        "",
        "namespace {",
        "",
        *_c_table("tinyvision::Dims", "kOutputs", "output shapes without batch (HWC), model by model in output order",
                  outputs),
        "const tinyvision::ModelInfo kModels[] = {",
        "    // name, flatbuffer, bytes, role, input HWC, first output, outputs, TFLM head, TFLM tail, in place on its",
        "    // stages",
        *models,
        "};",
        "",
        *_c_table("tinyvision::StageInfo", "kStages",
                  "buffer {h, w, c}, quantization {scale, zero point}, arena section {offset, size}", stages),
        *_c_table("tinyvision::PatchInfo", "kPatches",
                  "model, stage, window {x, y, w, h} of the stage's source, output box {x, y, c, w, h, channels}",
                  patches),
        "const tinyvision::PersistentSection kPersistent[] = {",
        "    // model, {offset, size}",
        *sections,
        "};",
        "",
        "}  // namespace",
        "",
        "const tinyvision::Plan kTinyVisionPlan = {",
        f"    {{{H}u, {W}u, {C}u}},",
        f"    {{{_c_float(bundle.image['scale'])}, {int(bundle.image['zero_point'])}}},",
        f"    {'kStages' if stages else 'nullptr'}, {len(bundle.stages)},",
        f"    kModels, {len(bundle.models)},",
        f"    {'kPatches' if patches else 'nullptr'}, {len(bundle.patches)},",
        f"    {int(bundle.tail)},",
        "    // arena: size, shared, persistent sections, tail input at the last stage, interpreters, temp_reserve",
        f"    {{{int(arena['size'])}u, {{{int(shared['offset'])}u, {int(shared['size'])}u}}, "
        f"kPersistent, {len(sections)}, {tail_in_place}, "
        f"tinyvision::InterpreterMode::{INTERPRETER_MODES[mode]}, {int(arena.get('temp_reserve', 0))}u}},",
        "};",
        "",
        "const char* const kTinyVisionClassNames[] = {",
        *names,
        "};",
        "",
    ])
    return header, source


def _c_table(type_name, name, comment, rows):
    """Lines of a constant C array and a blank line; none for no rows (a whole model has no stage and
    no patch, and C++ has no empty arrays: the plan points at nullptr)."""
    return [f"const {type_name} {name}[] = {{", f"    // {comment}", *rows, "};", ""] if rows else []


def interpreter_mode(bundle):
    """The bundle's ``arena.interpreters`` ("resident" when absent); TinyVisionError for an unknown one."""
    mode = bundle.arena.get("interpreters", "resident")
    if mode not in INTERPRETER_MODES:
        raise TinyVisionError(f"unknown arena.interpreters {mode!r} (expected one of {', '.join(INTERPRETER_MODES)})")
    return mode


def interpreter_slots(bundle):
    """MicroInterpreter objects the sketch declares: one per model ("resident") or one ("one_at_a_time")."""
    return 1 if interpreter_mode(bundle) == "one_at_a_time" else len(bundle.models)


def model_operators(bundle):
    """Sorted builtin operator names used by the bundle's models; TinyVisionError for one the library lacks."""
    from converters.ir import Model

    used = set()
    for m in bundle.models:
        for graph in Model.from_bytes(m.data, m.file).subgraphs:
            used.update(op.opcode for op in graph.ops)
    missing = sorted(op for op in used if op not in RESOLVER_METHODS)
    if missing:
        raise TinyVisionError(f"the Arduino export cannot register operator(s) {', '.join(missing)} "
                              f"(supported: {', '.join(sorted(RESOLVER_METHODS))})")
    return sorted(used)


def render_model_ops(bundle):
    ops = model_operators(bundle)
    calls = " &&\n         ".join(f"r.{RESOLVER_METHODS[op]}() == kTfLiteOk" for op in ops)
    return "\n".join([
        "// Generated by tinyvision (converters.export.arduino): the operators of the bundle's models. Do not edit.",
        "#ifndef TINYVISION_MODEL_OPS_H_",
        "#define TINYVISION_MODEL_OPS_H_",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"constexpr unsigned int kTinyVisionNumOps = {len(ops)};  // {', '.join(ops)}",
        "using TinyVisionOpResolver = tflite::MicroMutableOpResolver<kTinyVisionNumOps>;",
        "",
        "inline bool TinyVisionAddOps(TinyVisionOpResolver& r) {",
        f"  return {calls};",
        "}",
        "",
        "#endif  // TINYVISION_MODEL_OPS_H_",
        "",
    ])


def render_test_image(image, label):
    """(test_image.h, test_image.cpp) for an int8 (H, W, C) image."""
    image = np.ascontiguousarray(image, dtype=np.int8)
    H, W, C = image.shape
    flat = image.reshape(-1)
    header = "\n".join([
        "// Generated by tinyvision (converters.export.arduino). Do not edit.",
        "#ifndef TINYVISION_TEST_IMAGE_H_",
        "#define TINYVISION_TEST_IMAGE_H_",
        "",
        "#include <stdint.h>",
        "",
        f"// {H} x {W} x {C} int8 (NHWC), quantized with the plan's image quantization.",
        "alignas(16) extern const int8_t kTinyVisionTestImage[];",
        f"constexpr uint32_t kTinyVisionTestImageSize = {flat.size};",
        f"constexpr int32_t kTinyVisionTestLabel = {int(label)};  // -1: unknown",
        "",
        "#endif  // TINYVISION_TEST_IMAGE_H_",
        "",
    ])
    rows = ",\n".join("  " + ", ".join(str(int(v)) for v in flat[i:i + 16]) for i in range(0, flat.size, 16))
    source = (
        "// Generated by tinyvision (converters.export.arduino). Do not edit.\n"
        '#include "test_image.h"\n\n'
        f"alignas(16) const int8_t kTinyVisionTestImage[] = {{\n{rows}\n}};\n"
    )
    return header, source


# ---------------------------------------------------------------- memory


def _memory_report(bundle, profile, folder, target, image, files, camera):
    num_models = len(bundle.models)
    num_ops = len(model_operators(bundle))
    ram = {
        "arena": int(bundle.arena["size"]),
        "interpreters": interpreter_slots(bundle) * INTERPRETER_BYTES,
        "op resolver": RESOLVER_BYTES + RESOLVER_BYTES_PER_OP * num_ops,
        "globals": SKETCH_GLOBALS_BYTES,
    }
    if decodes_boxes(bundle):
        ram["box detections"] = BOX_DETECTIONS_BYTES
    arm = arm_size(folder, [f for f in PLAIN_SOURCES if f in files], profile.arch_flags)
    flash = {"models": len(model_image(bundle).data)}
    if arm is not None:
        flash["runtime + plan + test image (measured)"] = arm["text"] + arm["data"]
        ram["globals"] += arm["data"] + arm["bss"]
    else:
        plan = (PLAN_FIXED_BYTES + PLAN_BYTES_PER_MODEL * num_models + PLAN_BYTES_PER_PATCH * len(bundle.patches)
                + PLAN_BYTES_PER_OUTPUT * sum(len(m.output_shapes) for m in bundle.models)
                + PLAN_BYTES_PER_SECTION * num_models + PLAN_BYTES_PER_STAGE * len(bundle.stages)
                + sum(len(m.name) + 1 for m in bundle.models))
        flash["test image"] = _align(image.size)
        flash["plan (estimate)"] = plan
        flash["runtime (estimate)"] = profile.runtime_code_bytes
    flash["TFLM glue"] = GLUE_CODE_BYTES
    flash["TFLM + Arduino core (estimate)"] = profile.code_flash_bytes
    ram_total = sum(ram.values())
    return ExportReport(
        sketch_dir=target, board=profile.name, interpreters=interpreter_mode(bundle), camera=camera,
        ram_bytes=ram_total,
        ram_available=profile.ram_available, camera_ram_bytes=ram_total + CAMERA_EXTRA_BYTES,
        board_ram_bytes=profile.ram_bytes,
        flash_bytes=sum(flash.values()), flash_available=profile.flash_bytes, ram=ram, flash=flash, arm_size=arm,
    )


def render_build_config(report):
    """build_config.h: the sketch's image source, and a compile-time stop for a camera build over the board's RAM."""
    fits = int(report.camera_fits)
    return "\n".join([
        "// Generated by tinyvision (converters.export.arduino). Do not edit, except TINYVISION_USE_CAMERA.",
        "#ifndef TINYVISION_BUILD_CONFIG_H_",
        "#define TINYVISION_BUILD_CONFIG_H_",
        "",
        "// 1: classify OV7675 camera frames (Nano 33 BLE Sense tinyML kit); 0: the test image in flash.",
        "#ifndef TINYVISION_USE_CAMERA",
        f"#define TINYVISION_USE_CAMERA {int(report.camera)}",
        "#endif",
        "",
        f"// Static RAM on {report.board}: test image build {report.ram_bytes:,} B, camera build "
        f"{report.camera_ram_bytes:,} B; the board leaves {report.ram_available:,} B beside the stack and core.",
        f"#define TINYVISION_CAMERA_BUILD_FITS {fits}",
        f"#define TINYVISION_BOARD_RAM_BYTES {report.board_ram_bytes}  // the board's RAM and flash (the emulator's map)",
        f"#define TINYVISION_BOARD_FLASH_BYTES {report.flash_available}",
        "#if TINYVISION_USE_CAMERA && !TINYVISION_CAMERA_BUILD_FITS",
        f'#error "tinyvision: the camera build needs {report.camera_ram_bytes} B of static RAM, more than the '
        f'{report.ram_available} B {report.board} leaves beside the stack and core: convert the bundle with a '
        f'smaller --budget"',
        "#endif",
        "",
        "#endif  // TINYVISION_BUILD_CONFIG_H_",
        "",
    ])


def _check_fit(report, profile):
    ram = report.camera_ram_bytes if report.camera else report.ram_bytes
    if ram > report.ram_available:
        build = "the camera build's " if report.camera else ""
        raise TinyVisionError(
            f"the bundle does not fit {profile.name}: {build}static RAM {ram:,} B (arena "
            f"{report.ram['arena']:,} B) > {report.ram_available:,} B ({profile.ram_bytes:,} B RAM minus "
            f"{profile.reserved_ram_bytes:,} B kept for the stack and the Arduino core)")
    if report.flash_bytes > report.flash_available:
        raise TinyVisionError(
            f"the bundle does not fit {profile.name}: flash {report.flash_bytes:,} B (models "
            f"{report.flash['models']:,} B) > {report.flash_available:,} B")


def arm_size(folder, sources, arch_flags):
    """Summed {"text", "data", "bss"} of ``sources`` (in ``folder``) compiled for the board, or None.

    None when arm-none-eabi-g++ / arm-none-eabi-size are not on PATH; a compile error in
    tinyvision's own sources is a bug and raises TinyVisionError with the compiler's message.
    """
    cxx, size = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-size")
    if cxx is None or size is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tinyvision-arm-") as build:
        objects = []
        for src in sources:
            obj = os.path.join(build, os.path.splitext(src)[0] + ".o")
            done = subprocess.run([cxx, *arch_flags, *ARM_CXXFLAGS, "-I", folder, "-c", os.path.join(folder, src),
                                   "-o", obj], capture_output=True, text=True)
            if done.returncode != 0:
                raise TinyVisionError(f"arm-none-eabi-g++ failed on {src}: {done.stderr.strip()[-2000:]}")
            objects.append(obj)
        done = subprocess.run([size, "-B", "-t", *objects], capture_output=True, text=True)
        if done.returncode != 0:
            raise TinyVisionError(f"arm-none-eabi-size failed: {done.stderr.strip()}")
    # Berkeley format; the last line is the total: text data bss dec hex filename
    text, data, bss = (int(v) for v in done.stdout.strip().splitlines()[-1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "sources": list(sources)}


# ---------------------------------------------------------------- helpers

def _align(n):
    return -(-int(n) // ALIGN) * ALIGN


def _c_float(value):
    """A float literal that reads back as exactly the float32 of ``value``."""
    text = f"{np.float32(value):.9g}"
    if not any(c in text for c in ".eE"):
        text += ".0"
    return text + "f"


def _c_dims(shape):
    dims = [int(d) for d in shape]
    if not 1 <= len(dims) <= 4:
        raise TinyVisionError(f"tensor shape {tuple(dims)} has rank {len(dims)}; the runtime takes rank 1 to 4")
    return "{" + f"{len(dims)}, {{{', '.join(f'{d}u' for d in dims)}}}" + "}"


def tflm_app_dir():
    """The folder holding the device runtime sources (checkout first, then the installed package's copy)."""
    for folder in TFLM_APP_DIRS:
        if os.path.isfile(os.path.join(folder, SKETCH_TEMPLATE)):
            return folder
    raise TinyVisionError(f"the device runtime sources are missing (looked in {', '.join(TFLM_APP_DIRS)}): "
                          "reinstall tinyvision")


def _read_app(file_name):
    path = os.path.join(tflm_app_dir(), file_name)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise TinyVisionError(f"cannot read the device runtime source {path}: {e.strerror or e}") from None


def _sketch_name(bundle_dir, sketch_name):
    if sketch_name is None:
        base = os.path.basename(os.path.abspath(os.fspath(bundle_dir)))
        if base.endswith(".tflite"):
            base = base[:-len(".tflite")]
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        sketch_name = ("tinyvision_" + base)[:63]
    if not isinstance(sketch_name, str) or not _SKETCH_NAME.match(sketch_name):
        raise TinyVisionError(f"sketch name {sketch_name!r} must be 1-63 letters, digits or '_'")
    return sketch_name


def _is_sketch(path, name):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, f"{name}.ino")) and os.path.isfile(
        os.path.join(path, "plan_data.h"))
