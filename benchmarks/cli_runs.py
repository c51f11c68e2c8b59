"""What the benchmarks that drive the real CLI share: their flags, running a command, a bundle's arena, the work
folder. Importing it puts the checkout first on sys.path."""
import json
import os
import subprocess
import sys
import tempfile

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def define_flags(samples, epochs, budget, max_mac_overhead):
    """The training, evaluation, auto-split and output flags, with these defaults."""
    flags.DEFINE_integer("samples", samples, "training images")
    flags.DEFINE_integer("epochs", epochs, "float training epochs (then one QAT epoch)")
    flags.DEFINE_float("learning_rate", 5e-3, "float training learning rate")
    flags.DEFINE_integer("eval_samples", 200, "val images evaluated")
    flags.DEFINE_string("budget", budget, "--budget of convert --patches=auto")
    flags.DEFINE_float("max_mac_overhead", max_mac_overhead, "--max_mac_overhead of convert --patches=auto")
    flags.DEFINE_string("work_dir", None, "keep the models and the bundle here (default: a temporary folder)")
    flags.DEFINE_bool("json", False, "print the figures as JSON")


def cli(*args):
    """stdout of one CLI command in a fresh process; exits with its error line when it fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"$ tinyvision {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
        sys.exit(f"tinyvision {args[0]} failed: {(errors or done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done.stdout


def split_figures(split_stdout, unsplit, bundle, unsplit_flash):
    """What ``convert --patches`` printed (``split_stdout``) and made (``bundle``, read), against the unsplit model
    (``unsplit``: its ``tinyvision.runtime.tflm.measure``; ``unsplit_flash``: its bytes): the split, whether convert
    found it bit-exact, both arenas as TFLM measured them, the bundle's extra MACs and both flash sizes."""
    arena = bundle.arena
    shared_end = arena["shared"]["offset"] + arena["shared"]["size"]
    chosen = [line for line in split_stdout.splitlines() if line.startswith("chosen:")]
    return {
        "bundle_bit_exact": "verified: bit-exact with the source model on TFLM" in split_stdout,
        "split": chosen[0] if chosen else "whole model",
        "unsplit_arena": {"non_persistent": unsplit.head_bytes, "persistent": unsplit.tail_bytes,
                          "total": unsplit.total_bytes},
        "bundle_arena": {"shared": arena["shared"]["size"], "persistent": arena["size"] - shared_end,
                         "total": arena["size"]},
        "mac_overhead": bundle.plan()["stats"].get("mac_overhead"),
        "flash": {"unsplit": unsplit_flash, "bundle": sum(len(m.data) for m in bundle.models)},
    }


def in_work_dir(run, work_dir, prefix):
    """run(folder) in ``work_dir`` (created; kept) or in a temporary folder."""
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
        return run(work_dir)
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        return run(work)


def arena_table(unsplit, bundle):
    """Lines of the arena table of split_figures' ``unsplit_arena`` and ``bundle_arena``."""
    return [f"{'arena (TFLM)':<14}{'non-persistent':>16}{'persistent':>12}{'total':>10}",
            f"{'unsplit':<14}{unsplit['non_persistent']:>16,}{unsplit['persistent']:>12,}{unsplit['total']:>10,}",
            f"{'bundle':<14}{bundle['shared']:>16,}{bundle['persistent']:>12,}{bundle['total']:>10,}"]


def run_and_print(run, report, prefix):
    """run(folder) (see in_work_dir), then print its result: JSON with --json, else report(result)'s lines."""
    result = in_work_dir(run, flags.FLAGS.work_dir, prefix)
    print(json.dumps(result, indent=1) if flags.FLAGS.json else "\n".join(report(result)))
