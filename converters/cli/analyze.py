"""Measure a .tflite (or a patch bundle folder) on the real TFLM and analytically.

Prints the per-operator live-memory table, TFLM's head / tail / total and the smallest
arena that runs, MACs and flash, and whether TFLM matches tf.lite.Interpreter bit for bit.

  tinyvision analyze --model=out/model.tflite --plot=out/memory.png
  tinyvision analyze --model=out/model.tflite --json
"""
from absl import flags

flags.DEFINE_string("model", None, "(required) .tflite file or bundle folder to analyze")
flags.DEFINE_bool("json", False, "print one JSON object instead of the table")
flags.DEFINE_string("plot", None, "write a PNG of arena memory per operator (a bundle: per stage, and its arena map)")
flags.DEFINE_string("report", None, "write the JSON report to this file too")
flags.DEFINE_string("budget", None, "SRAM budget drawn on the plot against the whole arena, e.g. 256KiB")
flags.DEFINE_bool("verify", True, "compare TFLM with tf.lite.Interpreter on random int8 input")
FLAGS = flags.FLAGS


def run():
    import json
    import os

    from converters.cli.units import parse_bytes
    from tinyvision.errors import TinyVisionError
    from tinyvision.fileio import atomic_write_text, read_tflite_bytes

    if not FLAGS.model:
        raise TinyVisionError("--model is required")
    budget = parse_bytes(FLAGS.budget) if FLAGS.budget else None
    if os.path.isdir(FLAGS.model):
        from converters.cli.bundle_report import analyze_bundle

        result, text, profile_plot = analyze_bundle(FLAGS.model, verify=FLAGS.verify)
    else:
        from tinyvision.analysis.report import analyze_tflite, format_table

        result, profile = analyze_tflite(read_tflite_bytes(FLAGS.model), os.path.basename(FLAGS.model),
                                         verify=FLAGS.verify)
        text = format_table(result)

        def profile_plot(path, budget_bytes):
            from tinyvision.analysis import plot_memory

            plot_memory(profile, path, budget_bytes=budget_bytes, title=os.path.basename(FLAGS.model),
                        persistent_bytes=result["tail_bytes"])

    if FLAGS.plot:
        profile_plot(FLAGS.plot, budget)
    if FLAGS.report:
        atomic_write_text(FLAGS.report, json.dumps(result, indent=2) + "\n")
    if FLAGS.json:
        print(json.dumps(result))
    else:
        print(text)
        if FLAGS.plot:
            print(f"wrote {FLAGS.plot}")
