"""``tinyvision convert --patches=...``: write a patch bundle (docs/bundle-format.md) from an int8 .tflite."""
import hashlib
import math
import os
import re
import time

from converters.cli.units import parse_bytes
from tinyvision.errors import TinyVisionError


def _grid(text, flag, least=2):
    """'P', 'PxP' or 'RxC' -> p or (rows, cols), of at least ``least`` tiles; TinyVisionError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise TinyVisionError(f"--patches={flag!r}: expected 'auto', 'tunnels', a grid like 3x3 or 2x4, or a chain "
                              "of stages like 6:4x4,13:2x2 (1x1: a segment; c12: a pooled convolution in 12 groups "
                              "of channels)")
    rows, cols = int(match.group(1)), int(match.group(2) or match.group(1))
    if rows < 1 or cols < 1 or rows * cols < least:
        raise TinyVisionError(f"--patches={flag!r}: a grid needs at least 2 tiles")
    return rows if rows == cols else (rows, cols)


def _chain(text):
    """'N:GRID,N:GRID,...' -> [(n, grid), ...]; a stage may be one 1x1 tile (a segment: a sequential model)
    or 'cK', a channel stage (``converters.patching.channels``: K groups of a pooled convolution's channels)."""
    from converters.patching.channels import ChannelGroups

    stages = []
    for part in text.split(","):
        n, _, grid = part.partition(":")
        if not n.strip().isdigit():
            raise TinyVisionError(f"--patches={text!r}: {part!r} is not N:GRID (an operator count and a grid)")
        groups = re.fullmatch(r"\s*c(\d+)\s*", grid)
        stages.append((int(n), ChannelGroups(int(groups.group(1))) if groups else _grid(grid, text, least=1)))
    return stages


def convert_to_bundle(model_bytes, FLAGS, source_bytes=None):
    """Split ``model_bytes`` per FLAGS (.patches, .split, .budget, .max_mac_overhead, .verify) into FLAGS.output.

    source_bytes: the user's file ``model_bytes`` was optimized from (reordered and planned: the same
    outputs, other bytes); the plan's source hash names it, so ``analyze`` recognizes the file.
    """
    from converters.cli.common import progress
    from converters.ir import Model
    from converters.patching import split_patch_stage, split_stages, split_tunnels, write_bundle
    from converters.patching.bundle import finalize
    from converters.quantize import read_metadata

    start = time.time()
    name = os.path.basename(FLAGS.model) if getattr(FLAGS, "model", None) else "model.tflite"
    if not name.endswith(".tflite"):
        name = os.path.splitext(name)[0] + ".tflite"
    mode = FLAGS.patches.strip().lower()
    model = Model.from_bytes(model_bytes, name)
    if mode == "tunnels":
        bundle = split_tunnels(model, name, segments="auto", max_mac_overhead=FLAGS.max_mac_overhead)
    elif mode == "auto":
        bundle = auto_bundle(model, model_bytes, name, FLAGS)
    elif ":" in mode:
        bundle = split_stages(model, _chain(mode), name, partial_expansions=FLAGS.partial_execution)
    else:
        grid = _grid(mode, mode)
        if FLAGS.split is None:
            raise TinyVisionError(f"--patches={FLAGS.patches} needs --split=N (operators run per patch)")
        bundle = split_patch_stage(model, FLAGS.split, grid, name, partial_expansions=FLAGS.partial_execution)
    metadata = read_metadata(model_bytes) or {"labels": [], "box_coding": None, "normalization": None}
    bundle.labels = metadata["labels"]
    if metadata["box_coding"] is not None:
        bundle.box_coding = metadata["box_coding"].to_dict()
    bundle.take_normalization(metadata["normalization"])
    if source_bytes is not None:  # also in a whole_model bundle: the user's file, not its optimized bytes
        bundle.source["sha256"] = hashlib.sha256(source_bytes).hexdigest()
    if getattr(FLAGS, "model", None):
        bundle.source["path"] = os.path.relpath(os.path.abspath(FLAGS.model), os.path.abspath(FLAGS.output))
    with progress(f"measuring {len(bundle.models)} models on TFLM and planning the shared arena"):
        finalize(bundle, interpreters=FLAGS.interpreters)
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


# Split points built and measured (TFLM, real layout, export's RAM and flash) per search: at most
# MEASURED_POINTS once one fits (they only look for a smaller one), MAX_MEASURED_POINTS in all. With
# --deep_search as many again of the deep chains, those estimated up to DEEP_SLACK above the chosen one's
# measured SRAM too: deep chains lay out above their estimates, where a shallower chain may lay out below.
MEASURED_POINTS, MAX_MEASURED_POINTS = 4, 10
DEEP_SLACK = 0.05


def auto_bundle(model, model_bytes, name, FLAGS):
    """``--patches=auto``: the finalized bundle of least static RAM (arena + runtime objects, as
    ``export --arduino`` counts it) within --max_mac_overhead, --max_latency_overhead, --max_flash_overhead and
    the board's RAM
    and flash (or --budget / --flash_budget); the whole model when no split beats it. Every point is
    built and measured before it is taken; one over a budget (its estimate was too low) gives way to
    the next. A tunnel model (InputSegmentation/PatchTunnel) takes its tunnels."""
    from converters.export.arduino import fit_report
    from converters.export.boards import get_board
    from converters.patching import split_stages, split_tunnels, whole_model
    from converters.patching.bundle import finalize
    from converters.patching.search import Candidate, candidate_points, format_table, search

    board = get_board(FLAGS.board)
    sram_budget = parse_bytes(FLAGS.budget) if FLAGS.budget else board.ram_available
    flash_budget = parse_bytes(FLAGS.flash_budget) if FLAGS.flash_budget else board.flash_bytes
    whole = finalize(whole_model(model_bytes, name))  # the bytes as they are: metadata and labels kept
    report = fit_report(whole, board)
    model_flash_limit = int((1 + FLAGS.max_flash_overhead) * report.flash["models"])
    unsplit = Candidate((), whole.arena["shared"]["size"], 0.0, report.flash["models"],
                        persistent=whole.arena["size"] - whole.arena["shared"]["size"],
                        measured_sram=report.ram_bytes, measured_flash=report.flash_bytes)
    objects = report.ram_bytes - whole.arena["size"]
    fixed_flash = report.flash_bytes - report.flash["models"]  # code, plan tables and test image
    flash_limit = f"flash <= {flash_budget:,} B ({board.name})"
    if not FLAGS.flash_budget and report.flash_bytes > flash_budget:  # no split can fit: say so, choose by SRAM
        print(f"{name} needs {report.flash_bytes:,} B of flash unsplit, over {board.name}'s {flash_budget:,} B: no "
              f"bundle of it fits that board's flash, so the choice is by SRAM alone (export it for a board with "
              "more flash, e.g. --board=mps2-an386)")
        flash_budget, flash_limit = math.inf, f"flash unlimited ({board.name}'s is too small)"

    def fits(c):
        return c.sram <= sram_budget and c.measured_flash <= flash_budget and c.flash <= model_flash_limit

    slower = FLAGS.max_latency_overhead
    partial = FLAGS.partial_execution
    limits = (f"SRAM <= {sram_budget:,} B, {flash_limit}, MAC overhead <= {100 * FLAGS.max_mac_overhead:.0f}%, "
              + ("" if slower is None else f"estimated instructions <= {1 + slower:.2f}x, ")
              + f"model flash <= {model_flash_limit:,} B")
    points = candidate_points(model)
    if not points:
        try:
            tunnels = split_tunnels(model, name, segments="auto", max_mac_overhead=FLAGS.max_mac_overhead)
        except TinyVisionError:
            tunnels = None
        if tunnels is not None:
            return _tunnels_or_whole(tunnels, whole, unsplit, fits, limits, name, board, FLAGS)
    chosen, bundle = (unsplit, whole) if fits(unsplit) else (None, None)
    result = search(model, FLAGS.max_mac_overhead, name, interpreters=FLAGS.interpreters, sram_budget=sram_budget,
                    flash_budget=min(flash_budget - fixed_flash, model_flash_limit), objects=objects,
                    max_latency_overhead=slower, partial_expansions=partial, deep=FLAGS.deep_search) if points else None
    tried = []
    # the default search's points as without --deep_search, then the deep chains': never a worse pick
    for points, slack in ([(result.ranked, 1.0), (result.deeper, 1 + DEEP_SLACK)] if result else []):
        count = 0
        for c in points:
            if chosen is not None and (c.sram >= slack * chosen.sram or count >= MEASURED_POINTS):
                break  # estimates run below what TFLM measures: nothing further on can beat the chosen one
            if count >= MAX_MEASURED_POINTS:
                break
            count += 1
            tried.append(c)
            built = finalize(split_stages(model, c.stages, name, partial_expansions=partial),
                             interpreters=FLAGS.interpreters)
            measured = fit_report(built, board)
            c.shared, c.flash = built.arena["shared"]["size"], measured.flash["models"]
            c.persistent = built.arena["size"] - c.shared
            c.measured_sram, c.measured_flash = measured.ram_bytes, measured.flash_bytes
            if not fits(c):
                print(f"  {c.label[2:]}: measured {c.sram:,} B SRAM, {c.measured_flash:,} B flash: over the budget, "
                      "next point")
            elif chosen is None or c.sram < chosen.sram:
                chosen, bundle = c, built
    if result is None:
        print(f"{name} has no patch stage to split")
    else:
        print(f"patch split search: {len(result.candidates)} candidates; Pareto set in SRAM (arena + runtime "
              f"objects) and MACs within {limits}:")
    for line in format_table(result, chosen, unsplit):
        print("  " + line)
    if chosen is None:
        best = min(tried + [unsplit] + ([result.best] if result else []), key=lambda c: c.sram)
        raise TinyVisionError(f"no split of {name} fits {limits}: the smallest is {best.label} with {best.sram:,} B "
                              f"(MAC overhead {100 * best.mac_overhead:.1f}%)")
    if chosen is unsplit:
        print(f"no split beats the unsplit model ({unsplit.sram:,} B SRAM): writing it whole, as a bundle "
              "with no patch stage (export --arduino takes it as is)")
    else:
        print(f"chosen: {chosen.label}: {chosen.sram:,} B SRAM (unsplit {unsplit.sram:,} B), "
              f"{chosen.measured_flash:,} B flash with the runtime, MAC overhead {100 * chosen.mac_overhead:.1f}%, "
              f"Cortex-M4F instructions {1 + chosen.latency_overhead:.2f}x (estimated)")
        print(f"  the same chain without the search: --patches={chosen.patches_flag}")
    return bundle


def _tunnels_or_whole(tunnels, whole, unsplit, fits, limits, name, board, FLAGS):
    """A tunnel model's bundle: its tunnels when they fit and need less SRAM than the whole model, else the
    whole model when it fits; TinyVisionError (one line, with the figures) when neither does."""
    from converters.export.arduino import fit_report
    from converters.patching.bundle import finalize
    from converters.patching.search import Candidate

    finalize(tunnels, interpreters=FLAGS.interpreters)
    report = fit_report(tunnels, board)
    split = Candidate((), tunnels.arena["shared"]["size"], tunnels.stats.get("mac_overhead", 0.0),
                      report.flash["models"], measured_sram=report.ram_bytes,
                      measured_flash=report.flash_bytes)
    print(f"auto: {name} is built of patch tunnels (--patches=tunnels): {split.sram:,} B SRAM, "
          f"{split.measured_flash:,} B flash; the whole model {unsplit.sram:,} B SRAM, {unsplit.measured_flash:,} B")
    if fits(split) and (split.sram < unsplit.sram or not fits(unsplit)):
        print("chosen: the tunnels")
        return tunnels
    if fits(unsplit):
        print(f"the tunnels do not beat the unsplit model within {limits}: writing it whole, as a bundle with no "
              "patch stage (export --arduino takes it as is)")
        return whole
    shared = len({p.model for p in tunnels.patches}) < len(tunnels.patches)
    raise TinyVisionError(
        f"neither the tunnels of {name} nor the whole model fit {limits}"
        + ("" if shared else "; its tunnels do not share one model (calibrated one by one): a QAT-trained "
           "model's do (tinyvision train), or take them anyway with --patches=tunnels"))


def summary_lines(bundle):
    """Arena, image, MACs and flash of a finalized bundle as text lines."""
    from converters.export.flash_image import image_size
    from converters.planning import persistent_span

    arena = bundle.arena
    mode = arena.get("interpreters", "resident")
    persistent = persistent_span(arena)
    sizes = [math.prod(s["shape"]) for s in bundle.stages]
    buffers = ", ".join(f"{'x'.join(map(str, s['shape']))} = {size:,} B" for s, size in zip(bundle.stages, sizes))
    if len(sizes) > 4:
        buffers = f"{len(sizes)}: {sum(sizes):,} B in all, the largest {max(sizes):,} B"
    H, W, C = bundle.image["shape"]
    stats = bundle.stats
    held = f"stage buffer{'s' * (len(bundle.stages) > 1)} {buffers}" if bundle.stages else "the whole model's head"
    lines = [
        f"shared region   {arena['shared']['size']:>10,} B  ({held})",
        f"persistent      {persistent:>10,} B  ({len(arena['persistent'])} section{'s' * (len(arena['persistent']) > 1)}"
        + (", one interpreter at a time: the largest)" if mode == "one_at_a_time" else ", side by side)"),
        f"arena total     {arena['size']:>10,} B",
        f"image           {H * W * C:>10,} B  ({H}x{W}x{C})",
    ]
    if "mac_overhead" in stats:
        lines.append(f"MAC overhead    {100 * stats['mac_overhead']:>9.1f} %  ({stats.get('macs', 0):,} MACs)")
    datas = [m.data for m in bundle.models]
    lines.append(f"flash (models)  {image_size(datas):>10,} B  (one flash image, equal weights stored once; "
                 f"{sum(map(len, datas)):,} B as separate files)")
    return lines
