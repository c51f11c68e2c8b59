"""``tinyvision convert --patches=...``: write a patch bundle (docs/bundle-format.md) from an int8 .tflite."""
import hashlib
import math
import os
import re
import time

from tinyvision.errors import TinyVisionError


def _grid(text, flag):
    """'P', 'PxP' or 'RxC' -> p or (rows, cols); TinyVisionError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise TinyVisionError(f"--patches={flag!r}: expected 'auto', 'tunnels', a grid like 3x3 or 2x4, or a chain "
                              "of stages like 6:4x4,13:2x2")
    rows, cols = int(match.group(1)), int(match.group(2) or match.group(1))
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise TinyVisionError(f"--patches={flag!r}: a grid needs at least 2 tiles")
    return rows if rows == cols else (rows, cols)


def _chain(text):
    """'N:GRID,N:GRID,...' -> [(n, grid), ...]."""
    stages = []
    for part in text.split(","):
        n, _, grid = part.partition(":")
        if not n.strip().isdigit():
            raise TinyVisionError(f"--patches={text!r}: {part!r} is not N:GRID (an operator count and a grid)")
        stages.append((int(n), _grid(grid, text)))
    return stages


def convert_to_bundle(model_bytes, FLAGS, source_bytes=None):
    """Split ``model_bytes`` per FLAGS (.patches, .split, .budget, .max_mac_overhead, .verify) into FLAGS.output.

    source_bytes: the user's file ``model_bytes`` was optimized from (reordered and planned: the same
    outputs, other bytes); the plan's source hash names it, so ``analyze`` recognizes the file.
    """
    from converters.cli.common import progress
    from converters.cli.units import parse_bytes
    from converters.ir import Model
    from converters.patching import split_patch_stage, split_stages, split_tunnels, write_bundle
    from converters.patching.bundle import finalize
    from converters.quantize import read_labels

    start = time.time()
    name = os.path.basename(FLAGS.model) if getattr(FLAGS, "model", None) else "model.tflite"
    if not name.endswith(".tflite"):
        name = os.path.splitext(name)[0] + ".tflite"
    mode = FLAGS.patches.strip().lower()
    model = Model.from_bytes(model_bytes, name)
    if mode == "tunnels":
        bundle = split_tunnels(model, name)
    elif mode == "auto":
        from converters.patching.search import format_table, search

        budget = parse_bytes(FLAGS.budget)
        result = search(model, budget, FLAGS.max_mac_overhead, name, interpreters=FLAGS.interpreters)
        print(f"patch split search: {len(result.candidates)} candidates, Pareto set (estimated shared region, "
              f"measured persistent):")
        for line in format_table(result):
            print("  " + line)
        if result.chosen is None:
            b = result.best
            raise TinyVisionError(
                f"no split fits {budget:,} B with MAC overhead <= {100 * FLAGS.max_mac_overhead:.0f}%: the smallest "
                f"is {b.label} with {b.total:,} B (MAC overhead {100 * b.mac_overhead:.1f}%)")
        print(f"chosen: {result.chosen.label}")
        bundle = split_stages(model, result.chosen.stages, name)
    elif ":" in mode:
        bundle = split_stages(model, _chain(mode), name)
    else:
        grid = _grid(mode, mode)
        if FLAGS.split is None:
            raise TinyVisionError(f"--patches={FLAGS.patches} needs --split=N (operators run per patch)")
        bundle = split_patch_stage(model, FLAGS.split, grid, name)
    bundle.labels = read_labels(model_bytes)
    if source_bytes is not None:
        bundle.source["sha256"] = hashlib.sha256(source_bytes).hexdigest()
    with progress(f"measuring {len(bundle.models)} models on TFLM and planning the shared arena"):
        finalize(bundle, interpreters=FLAGS.interpreters)
    if mode == "auto" and bundle.arena["size"] > parse_bytes(FLAGS.budget):
        raise TinyVisionError(f"the chosen split needs {bundle.arena['size']:,} B on TFLM, over the "
                              f"{parse_bytes(FLAGS.budget):,} B budget (the estimate was too low)")
    if FLAGS.verify:
        from tinyvision.runtime.patch_runner import verify_bundle

        with progress("checking the bundle bit-exact against the model on TFLM"):
            check = verify_bundle(bundle, model_bytes)
        if not check.ok:
            raise TinyVisionError(f"the bundle is not exact, nothing written: {check.detail}")
        print(f"verified: {check.detail}")
    write_bundle(bundle, FLAGS.output)
    for line in summary_lines(bundle):
        print(line)
    print(f"wrote {FLAGS.output} ({len(bundle.models)} models) in {time.time() - start:.1f} s")


def summary_lines(bundle):
    """Arena, image, MACs and flash of a finalized bundle as text lines."""
    from converters.planning import persistent_span

    arena = bundle.arena
    mode = arena.get("interpreters", "resident")
    persistent = persistent_span(arena)
    buffers = ", ".join(f"{'x'.join(map(str, s['shape']))} = {math.prod(s['shape']):,} B" for s in bundle.stages)
    H, W, C = bundle.image["shape"]
    stats = bundle.stats
    lines = [
        f"shared region   {arena['shared']['size']:>10,} B  (stage buffer{'s' * (len(bundle.stages) > 1)} {buffers})",
        f"persistent      {persistent:>10,} B  ({len(arena['persistent'])} sections"
        + (", one interpreter at a time: the largest)" if mode == "one_at_a_time" else ", side by side)"),
        f"arena total     {arena['size']:>10,} B",
        f"image           {H * W * C:>10,} B  ({H}x{W}x{C})",
    ]
    if "mac_overhead" in stats:
        lines.append(f"MAC overhead    {100 * stats['mac_overhead']:>9.1f} %  ({stats.get('macs', 0):,} MACs)")
    lines.append(f"flash (models)  {sum(len(m.data) for m in bundle.models):>10,} B")
    return lines
