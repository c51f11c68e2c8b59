"""Convert a .keras model to a full-int8 .tflite, or rewrite an existing int8 .tflite.

Keras models are quantized (QAT models as trained; float ones calibrated on --dataset, which is
required for them: the images the model will see, normally the ones it was trained on)
with int8 input/output, per-channel convolutions and per-tensor dense layers, and get
tflite-support metadata. Every model then goes through the memory-optimal operator
order pass (--noreorder to skip) and gets an offline arena plan (--noplan to skip), each checked
bit-exact against the model before it (tf.lite.Interpreter for the order, TFLM for the plan).

  tinyvision convert --model=out/model_qat.h5 --dataset=builtin_vww --output=out/model.tflite
  tinyvision convert --model=theirs.tflite --output=theirs_reordered.tflite

A box detector (a BoxHead, or a QAT .h5 that train saved) calibrates on box data (builtin_detection, voc:,
coco:, tfrecord:), and its anchors and coding go into the .tflite's metadata (box_coding.json) and from there
into a bundle's plan.json, so evaluate, predict and export --arduino decode its boxes.
"""
from absl import flags

from converters.cli.common import DATASET_HELP

flags.DEFINE_string("model", None, "(required) .keras / .h5 or .tflite input (never modified)")
flags.DEFINE_string("output", None, "(required) output .tflite file (or bundle folder with --patches)")
flags.DEFINE_string("dataset", None, "(required for a Keras model) calibration data, whose class names become the "
                    "model's labels: " + DATASET_HELP)
flags.DEFINE_integer("calibration_samples", 200, "representative samples for int8 calibration")
flags.DEFINE_bool("reorder", True, "rewrite the operator order to minimize peak live memory")
flags.DEFINE_bool("plan", True, "write an offline arena plan (OfflineMemoryAllocation) when it beats TFLM's")
flags.DEFINE_bool("per_channel_dense", False, "keep per-channel FULLY_CONNECTED weights (wrong on CMSIS-NN)")
flags.DEFINE_bool("per_tensor_dense", False, "with a .tflite: requantize its per-channel FULLY_CONNECTED weights "
                  "per-tensor, as the Arduino TFLM's CMSIS-NN kernel needs. CHANGES THE MODEL'S OUTPUTS (explicit "
                  "only; the change on random inputs is printed)")
flags.DEFINE_bool("board_exact_mean", True, "rewrite each global-average MEAN that changes quantization into a "
                  "DEPTHWISE_CONV_2D computing the same values, which the Arduino TFLM library (older TFLM: such a "
                  "MEAN through float, at times 1 LSB off) computes as TFLM does; costs 8 B of persistent arena per "
                  "channel and H x W x C B of flash")
flags.DEFINE_bool("partial_execution", False, "run each convolution that only a global pool or a strided depthwise "
                  "reads a group of channels at a time where that shrinks the arena plan (Pex; bit-exact), in the "
                  "unsplit model or in patch models and the last tail; costs Cortex-M4 instructions (CMSIS-NN runs a "
                  "convolution of few channels less efficiently)")
flags.DEFINE_bool("verify", True, "check rewritten models bit-exact (tf.lite.Interpreter, and TFLM for bundles)")
flags.DEFINE_string("patches", None, "per-patch bundle: 'auto', a grid 'PxP' or 'RxC' (with --split), a chain of "
                    "patch stages 'N:GRID,N:GRID,...' (stage k runs up to op N over its grid; N counts the ops of the "
                    "converted model: `convert` it, then `analyze` it for the indices; a 1x1 stage is a segment: "
                    "a sequential model; 'N:cK' runs a convolution and its global pool, ending at op N, as K "
                    "models of a group of channels each), or 'tunnels'")
flags.DEFINE_integer("split", None, "with a grid: number of leading operators run per patch")
flags.DEFINE_string("board", "nano33ble", "with --patches=auto: the board whose RAM (less its reserve for the "
                    "stack and core) and flash the bundle must fit, as export --arduino counts them")
flags.DEFINE_string("budget", None, "with --patches=auto: static RAM budget (arena + runtime objects, as export "
                    "--arduino counts it) instead of the board's")
flags.DEFINE_string("flash_budget", None, "with --patches=auto: flash budget (models + code + test image, as export "
                    "--arduino counts it) instead of the board's")
flags.DEFINE_float("max_flash_overhead", 0.25, "with --patches=auto: largest extra model flash accepted, as a "
                   "fraction of the unsplit model")
flags.DEFINE_enum("interpreters", "one_at_a_time", ["one_at_a_time", "resident"],
                  "with --patches: create each model's interpreter just before it runs, all in one persistent "
                  "slot (one_at_a_time: least SRAM), or keep every interpreter alive (resident: no re-creation)")
flags.DEFINE_float("max_mac_overhead", 0.15, "with --patches=auto or tunnels: largest extra MACs accepted, as a fraction")
flags.DEFINE_float("max_latency_overhead", None, "with --patches=auto: largest extra Cortex-M4F instructions per "
                   "inference accepted (estimated by tinyvision.analysis.latency: patches, copies and interpreter "
                   "re-creation), as a fraction of the unsplit model's; default: no limit")
flags.DEFINE_bool("deep_search", False, "with --patches=auto: besides the chains of up to 3 tiled stages, search "
                  "chains of any depth (a stage between any block boundaries, the first from the image, over every "
                  "grid within --max_mac_overhead; msf-CNN's DP over cut points): finds deep chains of far less "
                  "SRAM, never a worse pick; builds every such stage once (minutes on a MobileNetV2)")
FLAGS = flags.FLAGS


def run():
    import os
    import time

    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import atomic_write_bytes, read_tflite_bytes

    if not FLAGS.model or not FLAGS.output:
        raise TinyVisionError("--model and --output are required")
    start = time.time()
    source_bytes = None  # the user's .tflite, which the bundle's plan names as its source
    if FLAGS.model.endswith((".keras", ".h5")):
        model_bytes = _quantize_keras(FLAGS.model)
    else:
        model_bytes = source_bytes = read_tflite_bytes(FLAGS.model)
        if FLAGS.per_tensor_dense:
            model_bytes = source_bytes = _per_tensor_dense(model_bytes, os.path.basename(FLAGS.model))
    model_bytes = _optimize(model_bytes, os.path.basename(FLAGS.model))
    if FLAGS.patches:
        from converters.cli.bundle_convert import convert_to_bundle

        convert_to_bundle(model_bytes, FLAGS, source_bytes)
    else:
        atomic_write_bytes(FLAGS.output, model_bytes)
        print(f"wrote {FLAGS.output} ({len(model_bytes):,} B) in {time.time() - start:.1f} s")


def _quantize_keras(path):
    from converters.cli.common import dataset, image_resolution, keras_box_coding, load_keras, progress
    from converters.quantize import to_int8_tflite
    from tinyvision.errors import TinyVisionError

    if not FLAGS.dataset:
        raise TinyVisionError("--dataset is required to convert a Keras model: int8 calibration needs the images "
                              "the model will see (normally its training data; builtin or builtin_vww for the "
                              "built-in data)")
    model = load_keras(path)
    coding = keras_box_coding(model, path)
    if coding is not None:
        calibration, labels = _box_calibration(model, coding)
    else:
        calibration, labels = dataset(FLAGS.dataset, image_resolution(model), "train", FLAGS.calibration_samples)
        classes = model.output_shape[-1]
        if labels is not None and len(labels) != classes:
            raise TinyVisionError(f"--dataset={FLAGS.dataset} has {len(labels)} classes but {path} has {classes} "
                                  "outputs: calibrate on the data the model was trained on")
    print(f"calibrating on up to {FLAGS.calibration_samples} images of {FLAGS.dataset}" +
          (f" (labels: {', '.join(labels)})" if labels else " (no class names: the model gets no labels)"))
    with progress("quantizing to int8 (TFLite converter)"):
        return to_int8_tflite(model, calibration, labels=labels, per_channel_dense=FLAGS.per_channel_dense,
                              max_samples=FLAGS.calibration_samples, box_coding=coding)


def _box_calibration(model, coding):
    """(calibration images, class names) of a box detector from box data."""
    from converters.cli.box_data import box_dataset, is_box_spec
    from converters.cli.common import image_resolution
    from tinyvision.errors import TinyVisionError

    if not is_box_spec(FLAGS.dataset):
        raise TinyVisionError(f"{FLAGS.model} is a box detector: calibrate it on box data (builtin_detection, voc:, "
                              f"coco: or tfrecord:), not --dataset={FLAGS.dataset}")
    images, _, names = box_dataset(FLAGS.dataset, image_resolution(model), "train", FLAGS.calibration_samples)
    if len(names) != coding.classes:
        raise TinyVisionError(f"--dataset={FLAGS.dataset} has {len(names)} classes but the box head of "
                              f"{FLAGS.model} {coding.classes}: calibrate on the data the model was trained on")
    return images, names


def _per_tensor_dense(model_bytes, name):
    """The model with per-tensor dense weights; prints what changed and how far the outputs moved on TFLM."""
    from converters.ir import Model
    from converters.passes.per_tensor_dense import per_tensor_dense
    from converters.patching.edges import random_source_inputs
    from converters.planning.verify import compare_on_tflm

    model = Model.from_bytes(model_bytes, name)
    rewritten = per_tensor_dense(model)
    if not rewritten:
        print("per-tensor dense: no per-channel FULLY_CONNECTED weights, nothing to rewrite")
        return model_bytes
    data = model.to_bytes()
    changed, total, worst = 0, 0, 0.0
    for x in random_source_inputs(model, 4, seed=0):
        check = compare_on_tflm(data, model_bytes, [x[None]], name=name)
        for new, old in zip(check.planned_outputs, check.unplanned_outputs):
            diff = abs(new.astype(float) - old.astype(float))
            changed, total, worst = changed + int((diff > 0).sum()), total + diff.size, max(worst, float(diff.max()))
    for r in rewritten:
        print(f"per-tensor dense: FULLY_CONNECTED op {r.op_index} ({r.weights!r}, {r.channels} channels) "
              f"requantized with its largest scale (weights moved up to {r.max_weight_error:.2f} step)")
    print(f"per-tensor dense CHANGES the outputs: {changed:,} of {total:,} output values differ from the "
          f"original on TFLM on 4 random inputs (max |diff| {worst:g})")
    return data


def _optimize(model_bytes, name):
    from converters.cli.common import progress
    from converters.optimize import optimize_tflite

    with progress("operator order and offline arena plan, checked on TFLM"):
        optimized, report = optimize_tflite(model_bytes, name, reorder=FLAGS.reorder, plan=FLAGS.plan,
                                            verify=FLAGS.verify, board_exact_mean=FLAGS.board_exact_mean,
                                            partial_execution=FLAGS.partial_execution and not FLAGS.patches)
    for line in report.lines():
        print(line)
    return optimized
