"""Latency on the emulated Cortex-M4F: the unsplit model and its bundles, side by side in one run.

    python benchmarks/latency.py [--model=mobilenet_v2_0.35_144] [--patches=auto --patches=6:4x4,13:2x2]
                                 [--patches=BUNDLE_DIR] [--max_mac_overhead=0.15] [--arduino_lib=PATH]
                                 [--partial_execution] [--deep_search]

--model is a zoo name (built as benchmarks/bundles.py builds it: untrained weights, seed 0, int8
calibrated on built-in synthetic images, cached) or a .tflite. Each --patches is split by the real
`tinyvision convert` (auto with --board=mps2-an386, so that a 1000-class model's flash does not stop
it; its RAM pick is the least SRAM within --max_mac_overhead as for the Nano). Then every row runs
its exported sketch on the board's TFLM library (Chirale_TensorFlowLite, CMSIS-NN) built for the
Cortex-M4F under qemu-system-arm -icount (``tinyvision.runtime.board``), exported for the
mps2-an386 profile: its 4 MB of RAM and code memory hold the unsplit model too. qemu has no caches
or wait states, so the instruction counts are those of the same code on the Nano's memory map.

Printed per row: the arena bytes TFLM touched (of the arena constant, and of its shared region),
instructions per inference with those of each stage, the tail and interpreter creation (re-creating
interpreters in one_at_a_time mode), the ratio to the unsplit model, the search's estimate of that ratio
(``tinyvision.analysis.latency``) and whether the scores equal the host's. --max_latency_overhead
and --deep_search are passed to each auto conversion, --partial_execution to every conversion.
"""
import os
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tinyvision  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import models  # noqa: E402
from bundles import _build_fingerprint, int8_model  # noqa: E402
from tinyvision.errors import TinyVisionError  # noqa: E402
from tinyvision.runtime import arduino_lib  # noqa: E402

flags.DEFINE_string("model", "mobilenet_v2_0.35_144", "zoo model name or a .tflite")
flags.DEFINE_multi_string("patches", ["auto", "6:4x4,13:2x2"], "convert --patches of each bundle, or a bundle "
                          "folder converted from --model already")
# --max_mac_overhead, --calibration and --cache_dir are those of benchmarks/bundles.py, imported above.
flags.DEFINE_bool("partial_execution", False, "convert every --patches with --partial_execution (operators run a "
                  "group of channels at a time where that shrinks the arena)")
flags.DEFINE_bool("deep_search", False, "pass --deep_search to each auto conversion (chains of any depth)")
flags.DEFINE_float("max_latency_overhead", None, "--max_latency_overhead of convert --patches=auto (default: none)")
flags.DEFINE_string("arduino_lib", None, "the board's TFLM library folder (default: ../shared/third_party/"
                    "Chirale_TensorFlowLite beside the repository, else the Arduino libraries folder's)")
FLAGS = flags.FLAGS

BOARD = "mps2-an386"


def library_dir():
    if FLAGS.arduino_lib:
        return FLAGS.arduino_lib
    beside = os.path.join(os.path.dirname(ROOT), "shared", "third_party", arduino_lib.LIB_NAME)
    return beside if os.path.isdir(beside) else arduino_lib.default_lib_dir()


def source_model():
    if FLAGS.model.endswith(".tflite"):
        return FLAGS.model
    if FLAGS.model not in models.ZOO:
        raise TinyVisionError(f"--model={FLAGS.model}: neither a .tflite nor a zoo model ({', '.join(models.ZOO)})")
    return int8_model(FLAGS.model, FLAGS.calibration, FLAGS.cache_dir, _build_fingerprint())


def convert(path, patches, output, partial_execution=None):
    """Run `tinyvision convert --patches=patches` on ``path`` into ``output``; the search's "chosen:" line or None.
    partial_execution: pass --partial_execution (None: as the --partial_execution flag says)."""
    command = [sys.executable, "-m", "converters.cli.main", "convert", f"--model={path}", f"--patches={patches}",
               f"--output={output}"]
    if FLAGS.partial_execution if partial_execution is None else partial_execution:
        command.append("--partial_execution")
    if patches == "auto":
        command += [f"--board={BOARD}", f"--max_mac_overhead={FLAGS.max_mac_overhead}"]
        if FLAGS.max_latency_overhead is not None:
            command.append(f"--max_latency_overhead={FLAGS.max_latency_overhead}")
        if FLAGS.deep_search:
            command.append("--deep_search")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyVisionError(f"convert --patches={patches} failed: {done.stderr.strip().splitlines()[-1:]}")
    chosen = [line for line in done.stdout.splitlines() if line.startswith("chosen:")]
    return chosen[0] if chosen else None


def emulate(path, lib_dir):
    """(the emulator's ``Emulation``, the estimated instructions per inference) of a model or bundle folder."""
    from converters.export.arduino import load_for_export
    from tinyvision.analysis.latency import bundle_instructions
    from tinyvision.runtime.board import run_bundle

    (result,) = run_bundle(path, ("cortex-m4",), lib_dir, board=BOARD).values()
    return result, bundle_instructions(load_for_export(path))["inference"]


def row(name, emulated, baseline):
    result, estimate = emulated
    counts = result.run.instructions()
    arena = result.run.arena
    parts = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in counts.items() if k.startswith("stage") or k == "tail")
    ratio = counts["inference"] / baseline[0] if baseline else 1.0
    estimated_ratio = estimate / baseline[1] if baseline else 1.0
    creation = counts["creation"] / counts["inference"]
    exact = "equal" if result.bit_exact else f"differ (stages {result.stage_mismatches}, scores by {result.score_diff})"
    return (f"{name:<24} {arena['used']:>10,} {arena['shared']:>11,} {counts['inference'] / 1e6:>9.1f} M {ratio:>6.2f}x "
            f"(estimated {estimated_ratio:.2f}x)  creation {counts['creation'] / 1e6:.1f} M ({creation:.1%})  [{parts}]  scores {exact}")


def main(argv):
    del argv
    lib_dir = library_dir()
    path = source_model()
    print(f"model {FLAGS.model} ({os.path.getsize(path):,} B); emulated Cortex-M4F (qemu mps2-an386, {BOARD} "
          f"memory map), library {os.path.basename(lib_dir)}")
    print(f"{'':<24} {'arena used':>10} {'shared used':>11} {'instructions':>11} {'ratio':>6}")
    unsplit = emulate(path, lib_dir)
    baseline = unsplit[0].run.instructions()["inference"], unsplit[1]
    print(row("unsplit", unsplit, baseline), flush=True)
    with tempfile.TemporaryDirectory(prefix="tinyvision-latency-") as work:
        for i, patches in enumerate(FLAGS.patches):
            folder = patches if os.path.isdir(patches) else os.path.join(work, f"bundle{i}")
            chosen = None if folder == patches else convert(path, patches, folder)
            print(row(f"--patches={patches}", emulate(folder, lib_dir), baseline), flush=True)
            if chosen:
                print(f"{'':<24} {chosen}")


if __name__ == "__main__":
    try:
        app.run(main)
    except TinyVisionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
