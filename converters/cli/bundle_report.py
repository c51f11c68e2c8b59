"""``tinyvision analyze --model=BUNDLE_FOLDER``: a patch bundle's arena, MACs and flash against the unsplit model."""
import hashlib
import os

from tinyvision.bundle import output_shapes_entry
from tinyvision.fileio import read_bytes
from tinyvision.runtime.patch_runner import verify_bundle


def _source_path(folder, plan):
    """The bundle's source .tflite on disk, or None.

    Looked for as its file name (absolute or from the cwd), next to the bundle, inside it, and at the path
    convert recorded relative to the bundle; a file whose sha256 is the recorded one is preferred."""
    source = plan.get("source") or {}
    name = source.get("file")
    if not name:
        return None
    folder = os.path.abspath(folder)
    candidates = [name, os.path.join(os.path.dirname(folder), name), os.path.join(folder, name)]
    if source.get("path"):
        candidates.append(os.path.join(folder, source["path"]))
    found = [path for path in candidates if os.path.isfile(path)]
    for path in found:
        if source.get("sha256") in (None, hashlib.sha256(read_bytes(path)).hexdigest()):
            return path
    return found[0] if found else None


def _baseline(source_bytes, stats):
    """head/tail/total/image/MACs/flash of the unsplit model on stock TFLM (None where unknown)."""
    base = stats.get("baseline", {})
    result = {"head_bytes": None, "tail_bytes": None, "total_bytes": None, "image_bytes": None,
              "mac_overhead": 0.0, "macs": base.get("macs"), "flash_bytes": base.get("flash_bytes"),
              "instructions": None}
    if source_bytes is None:
        return result
    from converters.export.flash_image import image_size
    from converters.ir import Model
    from tinyvision.analysis import model_cost
    from tinyvision.analysis.latency import default_model
    from tinyvision.runtime import tflm

    report = tflm.measure(source_bytes, name="source")
    model = Model.from_bytes(source_bytes, "source")
    shape = model.main.inputs[0].shape
    image = 1
    for d in shape[1:]:
        image *= int(d)
    result.update(head_bytes=int(report.head_bytes), tail_bytes=int(report.tail_bytes),
                  total_bytes=int(report.total_bytes), image_bytes=image,
                  macs=int(model_cost(model).macs), flash_bytes=image_size([source_bytes]),
                  instructions=int(default_model().invoke(model.main)))
    return result


def check_against_source(folder, bundle):
    """The bundle's ``Verification`` against its source .tflite on TFLM, or None when the source is not found."""
    path = _source_path(folder, bundle.plan())
    return None if path is None else verify_bundle(bundle, read_bytes(path))


def analyze_bundle(folder, verify=True):
    """(result dict, text, plot(path, budget_bytes=None)) for the bundle in ``folder``.

    result: head_bytes (shared non-persistent region), tail_bytes (the arena's persistent part: all sections
    side by side, or the one slot they share with one interpreter at a time), interpreters, total_bytes
    (arena), image_bytes (H*W*C int8), mac_overhead (fraction), macs, flash_bytes (the models' flash image), bit_exact
    (bundle vs source on TFLM; None when the source .tflite is not found or verify is off), board_differences
    (one line per kind of operator the Arduino TFLM library computes differently from the host: which, where,
    and by how much; converters.export.board_kernels.difference_lines), instructions (Cortex-M4F
    instructions per inference, estimated: ``tinyvision.analysis.latency``, interpreter re-creation
    included), models (per model),
    baseline (the same keys for the unsplit source on stock TFLM; None values when the source is missing).
    """
    from converters.export.board_kernels import bundle_board_differences, difference_lines
    from converters.export.flash_image import image_size
    from converters.planning import persistent_span
    from tinyvision.analysis.latency import bundle_instructions
    from tinyvision.bundle import read_bundle

    bundle = read_bundle(folder)
    plan = bundle.plan()
    arena = bundle.arena
    H, W, C = bundle.image["shape"]
    stats = bundle.stats or {}
    source_path = _source_path(folder, plan)
    source_bytes = None
    if source_path:
        source_bytes = read_bytes(source_path)
    runs = [0] * len(bundle.models)
    for p in bundle.patches:
        runs[p.model] += 1
    runs[bundle.tail] += 1
    result = {
        "bundle": os.path.abspath(folder),
        "kind": bundle.kind,
        "head_bytes": int(arena["shared"]["size"]),
        "tail_bytes": int(persistent_span(arena)),
        "interpreters": arena.get("interpreters", "resident"),
        "total_bytes": int(arena["size"]),
        "image_bytes": int(H * W * C),
        "stage_bytes": [int(s["size"]) for s in arena["stages"]],
        "mac_overhead": stats.get("mac_overhead"),
        "macs": stats.get("macs"),
        "flash_bytes": image_size([m.data for m in bundle.models]),
        "instructions": int(bundle_instructions(bundle)["inference"]),
        "offline_plans": bool(arena.get("offline_plans", False)),
        "source": source_path,
        "source_sha256_match": (hashlib.sha256(source_bytes).hexdigest() == bundle.source.get("sha256")
                                if source_bytes is not None else None),
        "bit_exact": None,
        "verify_detail": None,
        "models": [{"name": m.name, "role": m.role, "runs": runs[i], "head_bytes": m.nonpersistent_bytes,
                    "persistent_bytes": m.persistent_bytes, "macs": m.macs, "flash_bytes": len(m.data),
                    "input_shape": list(m.input_shape), **output_shapes_entry(m.output_shapes)}
                   for i, m in enumerate(bundle.models)],
    }
    if verify and source_bytes is not None:
        check = verify_bundle(bundle, source_bytes)
        result["bit_exact"] = bool(check.ok)
        result["verify_detail"] = check.detail
    result["board_differences"] = difference_lines(bundle_board_differences(bundle))
    result["baseline"] = _baseline(source_bytes, stats)
    text = format_report(result)

    def plot(path, budget_bytes=None):
        from tinyvision.analysis.plot import plot_bundle_memory

        plot_bundle_memory(bundle, path, budget_bytes, os.path.basename(os.path.abspath(folder)))

    return result, text, plot


def _fmt(value, unit=" B"):
    return "-" if value is None else f"{value:,}{unit}"


def format_report(result):
    """Per-layer (unsplit) vs per-patch side by side, then one row per bundle model."""
    base = result["baseline"]
    rows = [
        ("non-persistent (head / shared)", base["head_bytes"], result["head_bytes"]),
        ("persistent (tail)", base["tail_bytes"], result["tail_bytes"]),
        ("arena total", base["total_bytes"], result["total_bytes"]),
        ("image", base["image_bytes"], result["image_bytes"]),
        ("flash", base["flash_bytes"], result["flash_bytes"]),
    ]
    lines = [f"{'':<32} {'per-layer':>14} {'per-patch':>14}"]
    for label, a, b in rows:
        lines.append(f"{label:<32} {_fmt(a):>14} {_fmt(b):>14}")
    lines.append(f"{'MACs':<32} {_fmt(base['macs'], ''):>14} {_fmt(result['macs'], ''):>14}")
    if result["mac_overhead"] is not None:
        lines.append(f"{'MAC overhead':<32} {'0.0 %':>14} {100 * result['mac_overhead']:>12.1f} %")
    lines.append(f"{'Cortex-M4F instructions (est.)':<32} {_fmt(base['instructions'], ''):>14} "
                 f"{_fmt(result['instructions'], ''):>14}")
    lines.append("")
    lines.append(f"{'model':<24} {'role':<6} {'runs':>4} {'head':>10} {'persistent':>11} {'MACs':>12} {'flash':>10}")
    for m in result["models"]:
        lines.append(f"{m['name']:<24} {m['role']:<6} {m['runs']:>4} {_fmt(m['head_bytes'], ''):>10} "
                     f"{_fmt(m['persistent_bytes'], ''):>11} {m['macs']:>12,} {m['flash_bytes']:>10,}")
    lines.append("")
    if result["bit_exact"] is None:
        lines.append("bit-exact: not checked" + ("" if result["source"] else " (source .tflite not found)"))
    else:
        lines.append(f"bit-exact: {'yes' if result['bit_exact'] else 'NO'} ({result['verify_detail']})")
    if result["board_differences"]:
        lines.append("on the board's TFLM library (Arduino): " + "; ".join(result["board_differences"]))
    else:
        lines.append("on the board's TFLM library (Arduino): every operator computes as on the host")
    return "\n".join(lines)
