"""Bundle benchmark: stock TFLM arena of each zoo model against its patch bundle from the real `tinyvision convert`.

    python benchmarks/bundles.py [--models=NAME,NAME] [--budget=256KiB] [--budget_for=NAME=SIZE ...]
                                 [--max_mac_overhead=0.15] [--json]

Per model:

* the int8 .tflite is built as in benchmarks/zoo.py (untrained weights, seed 0, full int8
  with ``converters.quantize.to_int8_tflite`` calibrated on a few built-in synthetic images)
  and cached in --cache_dir, keyed by the sources that make it;
* stock TFLM head / tail / total of that unsplit model (``tinyvision.runtime.tflm.measure_many``);
* the CLI itself, in a subprocess, timed from start to exit: ``python -m converters.cli.main
  convert --model=... --patches=auto --budget=... --max_mac_overhead=... --output=DIR``
  (``--patches=tunnels`` for the seed-003 tunnel models); its Pareto table is printed below the table;
* from the bundle's plan.json: the arena's shared region, persistent part (everything above the
  shared region) and total, MAC overhead, and the flash image of its models (as `export --arduino`
  stores them: equal weights once);
* the verdict of the CLI's own bit-exact check (the bundle against the model it split, after its
  reorder pass); with --reverify, the written bundle checked again on TFLM against the unsplit
  model as built (``tinyvision.runtime.patch_runner.verify_bundle``).

reduction = stock total / bundle total. MobileNetV2 1.0/224 gets 512 KiB by default (--budget_for):
its per-channel requantization data alone (TFLM persistent) is ~140 KB, and no split of it fits 256 KiB.
"""
import dataclasses
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tinyvision  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import models  # noqa: E402
from converters.cli.units import parse_bytes  # noqa: E402
from tinyvision.errors import TinyVisionError  # noqa: E402
from tinyvision.fileio import atomic_write_bytes  # noqa: E402

DEFAULT_MODELS = ["mobilenet_v2_0.35_144", "mobilenet_v2_rd_0.35_144", "mobilenet_v2_0.35_96", "mobilenet_v2_1.0_224",
                  "seed003_vww"]
# Sources whose changes change the cached int8 models.
_BUILD_SOURCES = ("models/*.py", "tinyvision/layers/*.py", "converters/quantize.py", "tinyvision/data/*.py")

flags.DEFINE_list("models", DEFAULT_MODELS, f"zoo models; known: {', '.join(models.ZOO)}")
flags.DEFINE_string("budget", "256KiB", "--budget of convert --patches=auto")
flags.DEFINE_multi_string("budget_for", ["mobilenet_v2_1.0_224=512KiB"], "NAME=SIZE: another budget for one model")
flags.DEFINE_float("max_mac_overhead", 0.15, "--max_mac_overhead of convert --patches=auto")
flags.DEFINE_integer("calibration", 8, "calibration images per model")
flags.DEFINE_string("cache_dir", os.path.join(tempfile.gettempdir(), "tinyvision-bench-int8"),
                    "where the built int8 .tflite files are kept between runs")
flags.DEFINE_string("bundle_dir", None, "keep the bundles here (default: a temporary folder, removed)")
flags.DEFINE_bool("reverify", False, "verify each written bundle again on TFLM against the unsplit model as built "
                  "(default: the CLI's own check, against its reordered model; ~5 s more per model)")
flags.DEFINE_bool("json", False, "print JSON instead of the tables")
FLAGS = flags.FLAGS


@dataclasses.dataclass
class Row:
    model: str
    mode: str  # "auto" or "tunnels"
    budget: int  # None for tunnels
    stock_head: int
    stock_tail: int
    stock_total: int
    flash_unsplit: int
    convert_seconds: float
    split: str = None  # "n=12 3x3", "n=6 4x4 -> 13 2x2", "tunnels"
    shared: int = None
    persistent: int = None
    total: int = None
    mac_overhead: float = None
    flash_bundle: int = None
    models_in_bundle: int = None
    verdict: str = None
    verify_detail: str = None
    error: str = None
    search_table: list = dataclasses.field(default_factory=list)

    @property
    def reduction(self):
        return self.stock_total / self.total if self.total else None


# ---------------------------------------------------------------- int8 models


def _build_fingerprint():
    h = hashlib.sha256()
    for pattern in _BUILD_SOURCES:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            h.update(os.path.relpath(path, ROOT).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def int8_model(name, calibration, cache_dir, fingerprint):
    """Path of the cached int8 .tflite of zoo model ``name`` (built on a miss, as benchmarks/zoo.py builds it)."""
    path = os.path.join(cache_dir, f"{name}-cal{calibration}-{fingerprint}.tflite")
    if not os.path.exists(path):
        import tensorflow as tf

        from converters.quantize import to_int8_tflite
        from tinyvision.data import synthetic_arrays

        tf.keras.utils.set_random_seed(0)
        keras_model = models.build(name)
        images, _ = synthetic_arrays(calibration, resolution=keras_model.input_shape[1],
                                     variant="vww" if "vww" in name else "shapes")
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write_bytes(path, to_int8_tflite(keras_model, images, max_samples=calibration))
        for stale in glob.glob(os.path.join(cache_dir, f"{name}-cal{calibration}-*.tflite")):
            if stale != path:  # built from older sources
                os.remove(stale)
    return path


def split_mode(name):
    """'tunnels' for models built of patch tunnels (seed-003), else 'auto'."""
    return "tunnels" if models.ZOO[name].func is models.seed003 else "auto"


# ---------------------------------------------------------------- the CLI


def run_convert(path, mode, budget_text, max_mac_overhead, output):
    """(seconds, returncode, stdout, stderr) of `tinyvision convert` on ``path``, in a fresh process."""
    command = [sys.executable, "-m", "converters.cli.main", "convert", f"--model={path}", f"--patches={mode}",
               f"--output={output}"]
    if mode == "auto":
        command += [f"--budget={budget_text}", f"--max_mac_overhead={max_mac_overhead}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stdout, done.stderr


def search_table(stdout):
    """The CLI's Pareto table (header and rows) and its 'chosen:' line, as printed."""
    lines, inside = [], False
    for line in stdout.splitlines():
        if line.startswith("patch split search:"):
            inside = True
            lines.append(line)
        elif inside and line.startswith("  "):
            lines.append(line)
        elif inside:
            inside = False
            if line.startswith("chosen:"):
                lines.append(line)
    return lines


def _error_line(stderr):
    found = [line for line in stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    return found[-1] if found else (stderr.strip().splitlines() or ["no output"])[-1]


def read_bundle_figures(row, folder):
    """Arena, MACs and flash (the models' flash image) of the bundle the CLI wrote into ``folder``."""
    from converters.export.flash_image import image_size

    with open(os.path.join(folder, "plan.json")) as f:
        plan = json.load(f)
    arena = plan["arena"]
    shared_end = arena["shared"]["offset"] + arena["shared"]["size"]
    row.shared = arena["shared"]["size"]
    row.persistent = arena["size"] - shared_end
    row.total = arena["size"]
    row.mac_overhead = plan["stats"].get("mac_overhead")
    models = []
    for m in plan["models"]:
        with open(os.path.join(folder, m["file"]), "rb") as f:
            models.append(f.read())
    row.flash_bundle = image_size(models)  # as export --arduino stores them: equal weights once
    row.models_in_bundle = len(plan["models"])


def verdict(check):
    """Short verdict of a ``Verification``."""
    return "bit-exact" if check.ok else "NOT EXACT"


# ---------------------------------------------------------------- the benchmark


def benchmark(names, budget_for, work_dir):
    from tinyvision.runtime import tflm

    fingerprint = _build_fingerprint()
    paths = {}
    for name in names:
        print(f"int8 model: {name}", file=sys.stderr, flush=True)
        paths[name] = int8_model(name, FLAGS.calibration, FLAGS.cache_dir, fingerprint)
    datas = {}
    for name in names:
        with open(paths[name], "rb") as f:
            datas[name] = f.read()
    stock = tflm.measure_many([(name, datas[name]) for name in names])
    rows = []
    for name, report in zip(names, stock):
        mode = split_mode(name)
        budget_text = budget_for.get(name, FLAGS.budget)
        output = os.path.join(work_dir, name)
        print(f"convert --patches={mode}: {name}", file=sys.stderr, flush=True)
        seconds, code, stdout, stderr = run_convert(paths[name], mode, budget_text, FLAGS.max_mac_overhead, output)
        row = Row(name, mode, parse_bytes(budget_text) if mode == "auto" else None, report.head_bytes,
                  report.tail_bytes, report.total_bytes, len(datas[name]), round(seconds, 1),
                  search_table=search_table(stdout))
        chosen = re.search(r"^chosen: (n=.+)$", stdout, re.M)
        row.split = chosen.group(1) if chosen else ("tunnels" if mode == "tunnels" else None)
        if code != 0:
            row.error = _error_line(stderr)
            row.verdict = "no bundle"
        else:
            read_bundle_figures(row, output)
            cli_check = re.search(r"^verified: (.*)$", stdout, re.M)
            row.verify_detail = cli_check.group(1) if cli_check else None
            if FLAGS.reverify:
                from tinyvision.runtime.patch_runner import verify_bundle

                check = verify_bundle(output, datas[name])
                row.verdict, row.verify_detail = verdict(check), check.detail
            else:  # the CLI writes nothing unless the stage buffer is bit-exact
                detail = row.verify_detail or ""
                row.verdict = ("bit-exact" if detail.startswith("bit-exact") else
                               "stage exact" if detail.startswith("exact split") else "not verified")
        rows.append(row)
    return rows


def _n(v):
    return "-" if v is None else f"{v:,}"


def format_tables(rows, max_mac_overhead):
    head = (f"{'model':<25} {'split':<15} {'budget':>9} {'stock head':>10} {'tail':>8} {'total':>9} | "
            f"{'shared':>8} {'persist.':>8} {'total':>8} {'reduct.':>7} {'MAC +%':>6} | {'flash':>10} "
            f"{'bundle':>10} {'+%':>5} | {'verdict':<21} {'convert s':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        reduction = f"{r.reduction:.2f}x" if r.reduction else "-"
        mac = f"{100 * r.mac_overhead:.1f}" if r.mac_overhead is not None else "-"
        extra = f"{100 * (r.flash_bundle / r.flash_unsplit - 1):.1f}" if r.flash_bundle else "-"
        budget = f"{r.budget // 1024}KiB" if r.budget and r.budget % 1024 == 0 else _n(r.budget)
        lines.append(
            f"{r.model:<25} {r.split or '-':<15} {budget:>9} {r.stock_head:>10,} {r.stock_tail:>8,} "
            f"{r.stock_total:>9,} | {_n(r.shared):>8} {_n(r.persistent):>8} {_n(r.total):>8} {reduction:>7} "
            f"{mac:>6} | {r.flash_unsplit:>10,} {_n(r.flash_bundle):>10} {extra:>5} | {r.verdict or '-':<21} "
            f"{r.convert_seconds:>9.1f}")
    lines.append("")
    lines.append("stock = TFLM on the unsplit int8 model (head / tail = persistent / total); bundle = plan.json arena "
                 "(shared region, persistent part above it, total); reduction = stock total / bundle total; flash = "
                 ".tflite bytes of the unsplit model vs the flash image of the bundle's models (equal weights stored "
                 "once); convert s = wall time of the whole CLI process.")
    for r in rows:
        lines.append("")
        if r.mode == "auto":
            lines.append(f"{r.model}: convert --patches=auto --budget={r.budget:,} B "
                         f"--max_mac_overhead={max_mac_overhead}")
        else:
            lines.append(f"{r.model}: convert --patches=tunnels ({_n(r.models_in_bundle)} models)")
        lines.extend("  " + line for line in r.search_table)
        if r.verify_detail:
            lines.append(f"  verify: {r.verify_detail}")
        if r.error:
            lines.append(f"  {r.error}")
    return "\n".join(lines)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines while building the int8 models
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])}")
    names = [n for n in FLAGS.models if n]
    unknown = [n for n in names if n not in models.ZOO]
    if unknown:
        raise app.UsageError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(models.ZOO)}")
    budget_for = {}
    for item in FLAGS.budget_for:
        name, sep, size = item.partition("=")
        if not sep:
            raise app.UsageError(f"--budget_for={item!r}: expected NAME=SIZE")
        budget_for[name.strip()] = size.strip()
    try:
        for text in [FLAGS.budget, *budget_for.values()]:
            parse_bytes(text)
        start = time.perf_counter()
        if FLAGS.bundle_dir:
            os.makedirs(FLAGS.bundle_dir, exist_ok=True)
            rows = benchmark(names, budget_for, FLAGS.bundle_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="tinyvision-bundles-") as work_dir:
                rows = benchmark(names, budget_for, work_dir)
    except TinyVisionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if FLAGS.json:
        print(json.dumps([dataclasses.asdict(r) | {"reduction": r.reduction} for r in rows], indent=2))
    else:
        print(format_tables(rows, FLAGS.max_mac_overhead))
        print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    app.run(main)
