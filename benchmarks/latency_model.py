"""Fit the Cortex-M4F instruction model (``tinyvision.analysis.latency``) on the emulator, and check it.

    python benchmarks/latency_model.py [--fit=MODEL[@PATCHES[+partial_execution]] ...] [--check=...]
                                       [--write] [--arduino_lib=PATH]

Each MODEL is a .tflite (the shared real-world models by default) or a zoo name (built as
benchmarks/bundles.py builds it); @PATCHES splits it with the real `tinyvision convert --patches=PATCHES`
first (+partial_execution: with --partial_execution, whose channel-group operators the model must fit
too). Every --fit run is exported for the mps2-an386 profile and run by the profiling harness on the
board's TFLM library (Chirale_TensorFlowLite, CMSIS-NN) built for the Cortex-M4F under qemu -icount
(``tinyvision.runtime.board.run_bundle(..., profile=True)``): it creates and invokes every model alone
and counts the instructions of each operator and of each creation. The model is fitted on those:

* per kernel (``op_kind``), instructions = coefficients . (MACs, output elements, input elements, output
  rows, 1), least squares with non-negative coefficients;
* creation (construction and AllocateTensors) = coefficients . (1, ops, tensors, per-channel channels);
* the runtime's copies: the copy instructions the sketch reported over the bytes its patches copied.

Then every run (--fit and --check) prints its measured instructions per stage, tail and creation beside
``bundle_instructions``'s estimate. --write stores the fitted model as the package's
``cortex_m4_instructions.json`` (what the search uses); without it the shipped one is only checked.
"""
import os
import sys
import tempfile

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tinyvision  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from latency import convert, library_dir  # noqa: E402  (and its flags: --arduino_lib, --calibration, --cache_dir)
from tinyvision.analysis import latency  # noqa: E402
from tinyvision.errors import TinyVisionError  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "models")
PARTIAL = "+partial_execution"
flags.DEFINE_multi_string("fit", [f"{SHARED}/person_detect.tflite", f"{SHARED}/person_detect.tflite@4:3x3,8:4x4,12:2x2",
                                  f"{SHARED}/kws_ref_model.tflite", f"{SHARED}/kws_ref_model.tflite@1:2x2",
                                  "mobilenet_v2_0.35_96@6:3x3,13:2x2",
                                  f"mobilenet_v2_0.35_96@6:3x3,13:2x2{PARTIAL}"],
                          "runs the model is fitted on")
flags.DEFINE_multi_string("check", ["mobilenet_v2_0.35_144", "mobilenet_v2_0.35_144@6:4x4,13:2x2",
                                    f"mobilenet_v2_0.35_144@6:4x4,13:2x2{PARTIAL}"],
                          "runs only compared with the estimate")
flags.DEFINE_bool("write", False, "store the fitted model in the package (tinyvision/analysis/"
                  "cortex_m4_instructions.json)")
FLAGS = flags.FLAGS

BOARD = "mps2-an386"


def nonnegative_lstsq(x, y):
    """Least squares with coefficients >= 0 (features whose coefficient goes negative are dropped, refitted)."""
    keep = np.ones(x.shape[1], dtype=bool)
    while True:
        coef = np.zeros(x.shape[1])
        coef[keep] = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
        if (coef >= 0).all():
            return coef
        keep &= coef > 0


def prepared(spec, work):
    """The path the harness runs: the model, or the bundle folder `tinyvision convert` made of it."""
    from bundles import _build_fingerprint, int8_model

    source, _, patches = spec.partition("@")
    partial = patches.endswith(PARTIAL)
    patches = patches.removesuffix(PARTIAL)
    if not source.endswith(".tflite"):
        source = int8_model(source, FLAGS.calibration, FLAGS.cache_dir, _build_fingerprint())
    if not patches:
        return source
    folder = os.path.join(work, f"bundle{len(os.listdir(work))}")
    convert(source, patches, folder, partial_execution=partial)
    return folder


def profiled(path):
    """(bundle, SketchRun with its profile) of ``path`` on the emulated Cortex-M4F."""
    from converters.export.arduino import load_for_export
    from tinyvision.runtime.board import run_bundle

    (result,) = run_bundle(path, ("cortex-m4",), library_dir(), board=BOARD, profile=True).values()
    if not result.bit_exact:
        raise TinyVisionError(f"{path}: the emulated run differs from the host's")
    return load_for_export(path), result.run


def samples(bundle, run):
    """([(kind, features, instructions)] per op, [(creation features, instructions)] per model)."""
    ops, creations = [], []
    for m, profile in sorted(run.profile.items()):
        graph = bundle.models[m].graph()
        if [op.opcode for op in graph.ops] != [name for name, _ in profile.ops]:
            raise TinyVisionError(f"model {m}: the profile's operators are not the model's")
        ops += [(latency.op_kind(op), latency.op_features(op), spent) for op, (_, spent) in zip(graph.ops, profile.ops)]
        creations.append((latency.creation_features(graph), profile.create))
    return ops, creations


def copied_bytes(bundle):
    """Bytes the runtime copied in one inference of ``bundle``."""
    in_place = set((bundle.arena or {}).get("in_place", []))
    return sum(latency.copied_bytes(bundle.models[p.model].graph()) for p in bundle.patches if p.model not in in_place)


def fit(runs):
    ops, creations, copies, copy_bytes = [], [], 0, 0
    for bundle, run in runs:
        o, c = samples(bundle, run)
        ops, creations = ops + o, creations + c
        copies, copy_bytes = copies + run.instructions()["copy"], copy_bytes + copied_bytes(bundle)
    coefficients = {}
    for kind in sorted({k for k, _, _ in ops}) + [latency.ANY_KIND]:
        rows = [(f, y) for k, f, y in ops if kind in (k, latency.ANY_KIND)]
        x, y = np.array([f for f, _ in rows]), np.array([y for _, y in rows], dtype=np.float64)
        coefficients[kind] = nonnegative_lstsq(x, y)
        error = np.abs(x @ coefficients[kind] - y).sum() / y.sum()
        print(f"  {kind:<24} {len(rows):>5} ops  mean |error| {error:6.1%}  "
              + " ".join(f"{name}={c:.3g}" for name, c in zip(latency.FEATURES, coefficients[kind])))
    x = np.array([f for f, _ in creations])
    y = np.array([y for _, y in creations], dtype=np.float64)
    creation = nonnegative_lstsq(x, y)
    print(f"  {'creation':<24} {len(y):>5} models mean |error| {np.abs(x @ creation - y).sum() / y.sum():6.1%}  "
          + " ".join(f"{name}={c:.3g}" for name, c in zip(latency.CREATION_FEATURES, creation)))
    per_byte = copies / copy_bytes if copy_bytes else 0.0
    print(f"  copies: {per_byte:.2f} instructions per byte ({copies:,} over {copy_bytes:,} B)")
    return latency.InstructionModel(coefficients, creation, per_byte)


def compare(label, bundle, run, costs):
    measured = run.instructions()
    estimate = latency.bundle_instructions(bundle, costs)
    parts = [k for k in estimate if k.startswith("stage")] + ["tail", "creation", "inference"]
    cells = "  ".join(f"{k} {measured[k] / 1e6:.1f}/{estimate[k] / 1e6:.1f}" for k in parts)
    error = estimate["inference"] / measured["inference"] - 1
    print(f"{label:<60} {cells}  M (measured/estimate)  {error:+.1%}")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory(prefix="tinyvision-latency-model-") as work:
        fitted = {spec: profiled(prepared(spec, work)) for spec in FLAGS.fit}
        print("fitted on the per-operator profile of", ", ".join(os.path.basename(s) for s in FLAGS.fit))
        costs = fit(fitted.values())
        checked = {spec: profiled(prepared(spec, work)) for spec in FLAGS.check}
    models = [("fitted", costs)]
    if os.path.isfile(latency.COSTS_FILE):
        models.append(("shipped", latency.InstructionModel.load()))
    for name, model in models:
        print(f"estimate by the {name} model:")
        for spec, (bundle, run) in list(fitted.items()) + list(checked.items()):
            compare(("  fit " if spec in fitted else "  check ") + os.path.basename(spec), bundle, run, model)
    if FLAGS.write:
        import json

        from tinyvision.fileio import atomic_write_bytes

        data = costs.to_json()
        kinds = ",\n".join(f"  {json.dumps(kind)}: {json.dumps(c)}" for kind, c in data["ops"].items())
        text = (f'{{\n "ops": {{\n{kinds}\n }},\n "creation": {json.dumps(data["creation"])},\n'
                f' "copy_per_byte": {data["copy_per_byte"]}\n}}\n')
        atomic_write_bytes(latency.COSTS_FILE, text.encode())
        print(f"wrote {os.path.relpath(latency.COSTS_FILE, ROOT)}")


if __name__ == "__main__":
    try:
        app.run(main)
    except TinyVisionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
