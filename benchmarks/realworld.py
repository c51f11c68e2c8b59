"""Real-world int8 models through analyze, convert and convert --patches (the models users bring).

For every .tflite in ../shared/models/ (beside the project root) and in the folders named with
--models, runs the CLI as a user would, one process per step:

* ``tinyvision analyze --json``: stock TFLM head / tail / total, MACs, and whether
  tf.lite.Interpreter agrees with TFLM (the reference) on the model;
* ``tinyvision convert``: the reordered, offline-planned model, measured again on TFLM;
* ``tinyvision convert --patches=auto`` (for --board, the Nano 33 BLE; --large_board and
  --large_flash_budget for a model whose file alone exceeds its flash) and any ``--chain=MODEL=CHAIN`` given: the bundle's
  shared region, persistent sections, total, flash image (and its ratio to the unsplit model's) and MAC
  overhead from its plan.json
  (TFLM-measured; image excluded), and whether convert verified it bit-exact against TFLM
  running the original model.

Prints one block per model with the wall time of each step. A step that fails shows its
one-line error; the benchmark goes on.

  python benchmarks/realworld.py
  python benchmarks/realworld.py --models=~/my_models --chain=person_detect=8:3x3 --noauto
  python benchmarks/realworld.py --partial_execution
  python benchmarks/realworld.py --partial_execution --deep_search
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MODELS = os.path.join(os.path.dirname(ROOT), "shared", "models")

flags.DEFINE_list("models", [], "more folders (or .tflite files) to run, besides ../shared/models")
flags.DEFINE_multi_string("chain", [], "MODEL=CHAIN: also convert MODEL (file name without .tflite) with "
                          "--patches=CHAIN, e.g. person_detect=8:3x3 (repeatable)")
flags.DEFINE_bool("auto", True, "run convert --patches=auto on every model")
flags.DEFINE_string("board", "nano33ble", "--board of convert --patches=auto")
flags.DEFINE_string("large_board", "mps2-an386", "--board of convert --patches=auto for a model whose file alone "
                    "exceeds --board's flash (the 224 px PyTorch MobileNetV2 on the Nano)")
flags.DEFINE_string("large_flash_budget", "16MiB", "--flash_budget of convert --patches=auto for such a model "
                    "(its 4 MB of weights fill even the emulator's code memory)")
flags.DEFINE_bool("partial_execution", False, "pass --partial_execution to every convert (operators run a group of "
                  "channels at a time where that shrinks the arena)")
flags.DEFINE_bool("deep_search", False, "pass --deep_search to every convert --patches=auto (chains of any depth)")
flags.DEFINE_integer("timeout", 1800, "seconds per CLI step")
FLAGS = flags.FLAGS


def model_files(folders):
    """Every .tflite in ``folders`` (files are taken as they are), sorted by name within each folder."""
    found = []
    for entry in folders:
        entry = os.path.expanduser(entry)
        if os.path.isfile(entry):
            found.append(entry)
        elif os.path.isdir(entry):
            found += [os.path.join(entry, f) for f in sorted(os.listdir(entry)) if f.endswith(".tflite")]
    return found


def cli(*args, timeout):
    """(exit code, stdout, the last stderr line or '', wall seconds) of one tinyvision command."""
    start = time.time()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        done = subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s", time.time() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return done.returncode, done.stdout, (errors[-1] if errors else ""), time.time() - start


def analyze_row(path, timeout):
    code, out, error, wall = cli("analyze", f"--model={path}", "--json", timeout=timeout)
    if code:
        return f"analyze  FAILED ({wall:.0f} s): {error}", None
    result = json.loads(out.strip().splitlines()[-1])
    tflite = result["tflite_interpreter"]
    return (f"stock    head {result['head_bytes']:>9,}  tail {result['tail_bytes']:>8,}  total "
            f"{result['total_bytes']:>9,}  MACs {result['macs']:,}  reference {result['reference']}, "
            f"tf.lite.Interpreter {tflite['verdict']}  ({wall:.0f} s)"), result


def convert_row(path, folder, timeout):
    from tinyvision.runtime import tflm

    output = os.path.join(folder, "converted.tflite")
    code, _, error, wall = cli("convert", f"--model={path}", f"--output={output}", *partial_flag(), timeout=timeout)
    if code:
        return f"convert  FAILED ({wall:.0f} s): {error}"
    with open(output, "rb") as f:
        report = tflm.measure(f.read(), name=os.path.basename(path))
    return (f"convert  head {report.head_bytes:>9,}  tail {report.tail_bytes:>8,}  total {report.total_bytes:>9,}"
            f"  (verified on TFLM; {wall:.0f} s)")


def partial_flag():
    return ["--partial_execution"] if FLAGS.partial_execution else []


def auto_target(path):
    """The target flags of ``path``'s --patches=auto: --board, or --large_board and --large_flash_budget when the
    file alone exceeds --board's flash (no bundle of it could fit)."""
    from converters.export.boards import get_board

    if os.path.getsize(path) <= get_board(FLAGS.board).flash_bytes:
        return [f"--board={FLAGS.board}"]
    return [f"--board={FLAGS.large_board}", f"--flash_budget={FLAGS.large_flash_budget}"]


def bundle_row(path, patches, folder, timeout):
    output = os.path.join(folder, f"bundle_{len(os.listdir(folder))}")
    target = auto_target(path) + (["--deep_search"] if FLAGS.deep_search else []) if patches == "auto" else []
    code, out, error, wall = cli("convert", f"--model={path}", f"--patches={patches}", f"--output={output}",
                                 *target, *partial_flag(), timeout=timeout)
    label = f"{patches:<8}" + (f" ({' '.join(target)})" if len(target) > 1 else "")
    if code:
        return f"{label} FAILED ({wall:.0f} s): {error}"
    with open(os.path.join(output, "plan.json")) as f:
        plan = json.load(f)
    arena = plan["arena"]
    shared = arena["shared"]["size"]
    persistent = arena["size"] - arena["shared"]["offset"] - shared
    stats = plan["stats"]
    unsplit = (stats.get("baseline") or {}).get("flash_bytes") or stats["flash_bytes"]  # a whole model: itself
    flash = f"{stats['flash_bytes']:>9,} ({stats['flash_bytes'] / unsplit:.2f}x the unsplit image)"
    chosen = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("chosen:")), None)
    exact = "bit-exact vs TFLM on the original" if "verified: bit-exact" in out else "not verified"
    what = f" (chose {chosen})" if chosen else ""
    return (f"{label} shared {shared:>9,}  persistent {persistent:>8,}  total {arena['size']:>9,}  flash "
            f"{flash}  MACs {100 * plan['stats']['mac_overhead']:+.1f}%  {exact}{what}  ({wall:.0f} s)")


def run_model(path, chains, timeout):
    name = os.path.splitext(os.path.basename(path))[0]
    print(f"{name}  ({os.path.getsize(path):,} B)", flush=True)
    with tempfile.TemporaryDirectory(prefix="tinyvision-realworld-") as folder:
        line, _ = analyze_row(path, timeout)
        print("  " + line, flush=True)
        print("  " + convert_row(path, folder, timeout), flush=True)
        for patches in (["auto"] if FLAGS.auto else []) + chains.get(name, []):
            print("  " + bundle_row(path, patches, folder, timeout), flush=True)


def main(argv):
    del argv
    chains = {}
    for entry in FLAGS.chain:
        name, _, chain = entry.partition("=")
        chains.setdefault(name, []).append(chain)
    folders = ([SHARED_MODELS] if os.path.isdir(SHARED_MODELS) else []) + FLAGS.models
    paths = model_files(folders)
    if not paths:
        print(f"no .tflite models: {SHARED_MODELS} is absent and --models names none", file=sys.stderr)
        return 1
    print("TFLM-measured bytes (host, reference kernels), image excluded; bundle figures from plan.json; "
          "MACs = extra MACs over the unsplit model\n")
    for path in paths:
        run_model(path, chains, FLAGS.timeout)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    app.run(main)
