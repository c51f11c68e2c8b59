"""Zoo benchmark: size, compute and TFLM arena of every zoo model, before and after the memory passes.

    python benchmarks/zoo.py [--models NAME,NAME] [--calibration N] [--json]

Each model is built with untrained (random, seed 0) weights and converted to full int8
with ``converters.quantize.to_int8_tflite``, calibrated on a few built-in synthetic
images; arena sizes do not depend on the weights. Per model, three variants:

* converter: the converter's operator order;
* reordered: after ``converters.passes.reorder_tflite``;
* planned: reordered, plus an offline arena plan (``plan_graph`` + ``write_offline_plan``,
  with the scratch buffers of TFLM's reference kernels, which the host TFLM runs).

TFLM head/tail/total come from the real TFLM (``tinyvision.runtime.tflm.measure_many``),
"analytic" from ``tinyvision.analysis.memory_profile``; params and MACs are counted on the
int8 graph (batch norm folded), flash is the .tflite size. The reference rows are keras
MobileNetV2(0.35, 144, 1000 classes, no softmax), with TF's default per-channel dense
weights and with this project's per-tensor default.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tinyvision  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from converters.ir import Model  # noqa: E402
from converters.passes import reorder_tflite  # noqa: E402
from converters.planning import plan_graph, reference_scratch, write_offline_plan  # noqa: E402
from converters.quantize import to_int8_tflite  # noqa: E402
from tinyvision.analysis import memory_profile, model_cost  # noqa: E402
from tinyvision.data import synthetic_arrays  # noqa: E402
from tinyvision.errors import TinyVisionError  # noqa: E402
from tinyvision.runtime import tflm  # noqa: E402

REFERENCE = "keras_mobilenet_v2_0.35_144"
# What stock TFLM reports for the reference (measured; see CONTRIBUTING.md): (head, tail, total) per dense quantization.
REFERENCE_EXPECTED = {"per_channel": (311_040, 79_760, 390_800), "per_tensor": (311_040, 71_760, 382_800)}
VARIANTS = ("converter", "reordered", "planned")


def build(name):
    tf.keras.utils.set_random_seed(0)
    if name == REFERENCE:
        return tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(144, 144, 3), weights=None, classes=1000,
                                                 classifier_activation=None)
    return models.build(name)


def variants(name, data):
    """{variant: .tflite bytes}: the converter's order, reordered, reordered + offline plan."""
    reordered, _ = reorder_tflite(data, name=name)
    model = Model.from_bytes(reordered, name=name)
    write_offline_plan(model, plan_graph(model.main, scratch=reference_scratch(model.main, name), name=name), name)
    return dict(zip(VARIANTS, (data, reordered, model.to_bytes())))


def benchmark(name, calibration, per_channel_dense=False):
    """One JSON-ready row: the int8 model's cost, conversion time and each variant's arena."""
    keras_model = build(name)
    resolution = keras_model.input_shape[1]
    images, _ = synthetic_arrays(calibration, resolution=resolution, variant="vww" if "vww" in name else "shapes")
    start = time.perf_counter()
    data = to_int8_tflite(keras_model, images, per_channel_dense=per_channel_dense, max_samples=calibration)
    seconds = time.perf_counter() - start
    cost = model_cost(data, name)
    tflites = variants(name, data)
    row = {"model": name, "dense": "per_channel" if per_channel_dense else "per_tensor", "params": cost.params,
           "macs": cost.macs, "convert_seconds": round(seconds, 1), "tflm_error": None, "variants": {}}
    try:
        reports = tflm.measure_many([(f"{name} ({v})", b) for v, b in tflites.items()])
    except TinyVisionError as e:  # e.g. an op TFLM cannot prepare: the analytic figures still stand
        row["tflm_error"], reports = str(e), [None] * len(tflites)
    for (variant, tflite), report in zip(tflites.items(), reports):
        measured = dataclasses.asdict(report) if report else dict.fromkeys(("head_bytes", "tail_bytes", "total_bytes"))
        row["variants"][variant] = {"flash_bytes": len(tflite), **measured,
                                    "analytic_head_bytes": memory_profile(tflite, name).head_bytes}
    return row


def _bytes(n):
    return "-" if n is None else f"{n:,}"


def format_table(rows):
    lines = [f"{'model':<28} {'dense':<11} {'params':>10} {'MACs':>13} {'conv s':>7} {'variant':<10} "
             f"{'flash B':>10} {'head B':>9} {'tail B':>8} {'total B':>9} {'analytic':>9}"]
    for row in rows:
        lead = (f"{row['model']:<28} {row['dense']:<11} {row['params']:>10,} {row['macs']:>13,} "
                f"{row['convert_seconds']:>7.1f}")
        for variant, v in row["variants"].items():
            lines.append(f"{lead} {variant:<10} {v['flash_bytes']:>10,} {_bytes(v['head_bytes']):>9} "
                         f"{_bytes(v['tail_bytes']):>8} {_bytes(v['total_bytes']):>9} {v['analytic_head_bytes']:>9,}")
            lead = " " * len(lead)  # model columns on the first row only
    for row in rows:
        if row["tflm_error"]:
            lines.append(f"{row['model']}: {row['tflm_error']}")
        if row["model"] == REFERENCE:
            v = row["variants"]["converter"]
            got, want = (v["head_bytes"], v["tail_bytes"], v["total_bytes"]), REFERENCE_EXPECTED[row["dense"]]
            lines.append(f"reference, {row['dense']} dense: TFLM head/tail/total {got}, expected {want}: "
                         f"{'OK' if got == want else 'MISMATCH'}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.ZOO), help="comma-separated zoo names")
    parser.add_argument("--calibration", type=int, default=8, help="calibration images per model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the keras MobileNetV2 reference rows")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in models.ZOO]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(models.ZOO)}")
    jobs = [(n, False) for n in names] + ([(REFERENCE, True), (REFERENCE, False)] if args.reference else [])
    rows = []
    for name, per_channel_dense in jobs:
        rows.append(benchmark(name, args.calibration, per_channel_dense))
        if not args.json:
            print(f"done: {name}", file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
