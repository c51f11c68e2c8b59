"""Convert a .keras model to a full-int8 .tflite, or rewrite an existing int8 .tflite.

Keras models are quantized (QAT models as trained; float ones calibrated on --dataset)
with int8 input/output, per-channel convolutions and per-tensor dense layers, and get
tflite-support metadata. Every model then goes through the memory-optimal operator
order pass (--noreorder to skip) and gets an offline arena plan (--noplan to skip), each checked
bit-exact against the model before it (tf.lite.Interpreter for the order, TFLM for the plan).

  tinyvision convert --model=out/model_qat.keras --dataset=builtin_vww --output=out/model.tflite
  tinyvision convert --model=theirs.tflite --output=theirs_reordered.tflite
"""
from absl import flags

from converters.cli.common import DATASET_HELP

flags.DEFINE_string("model", None, ".keras / .h5 or .tflite input (never modified)")
flags.DEFINE_string("output", None, "output .tflite file (or bundle folder with --patches)")
flags.DEFINE_string("dataset", "builtin", "calibration data: " + DATASET_HELP)
flags.DEFINE_integer("calibration_samples", 200, "representative samples for int8 calibration")
flags.DEFINE_bool("reorder", True, "rewrite the operator order to minimize peak live memory")
flags.DEFINE_bool("plan", True, "write an offline arena plan (OfflineMemoryAllocation) when it beats TFLM's")
flags.DEFINE_bool("per_channel_dense", False, "keep per-channel FULLY_CONNECTED weights (wrong on CMSIS-NN)")
flags.DEFINE_bool("verify", True, "check rewritten models bit-exact (tf.lite.Interpreter, and TFLM for bundles)")
flags.DEFINE_string("patches", None, "per-patch bundle: 'auto', a grid 'PxP' or 'RxC' (with --split), a chain of "
                    "patch stages 'N:GRID,N:GRID,...' (stage k runs up to op N over its grid), or 'tunnels'")
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
flags.DEFINE_float("max_mac_overhead", 0.15, "with --patches=auto: largest extra MACs accepted, as a fraction")
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
    model_bytes = _optimize(model_bytes, os.path.basename(FLAGS.model))
    if FLAGS.patches:
        from converters.cli.bundle_convert import convert_to_bundle

        convert_to_bundle(model_bytes, FLAGS, source_bytes)
    else:
        atomic_write_bytes(FLAGS.output, model_bytes)
        print(f"wrote {FLAGS.output} ({len(model_bytes):,} B) in {time.time() - start:.1f} s")


def _quantize_keras(path):
    from converters.cli.common import dataset, image_resolution, load_keras
    from converters.quantize import to_int8_tflite

    model = load_keras(path)
    calibration, labels = dataset(FLAGS.dataset, image_resolution(model), "train", FLAGS.calibration_samples)
    classes = model.output_shape[-1]
    if labels is not None and len(labels) != classes:
        labels = None
    return to_int8_tflite(model, calibration, labels=labels, per_channel_dense=FLAGS.per_channel_dense,
                          max_samples=FLAGS.calibration_samples)


def _optimize(model_bytes, name):
    from converters.optimize import optimize_tflite

    optimized, report = optimize_tflite(model_bytes, name, reorder=FLAGS.reorder, plan=FLAGS.plan,
                                        verify=FLAGS.verify)
    for line in report.lines():
        print(line)
    return optimized
