"""Search for a patch-stage split (stage length n, p x p grid) that fits an SRAM budget.

Every candidate is built with ``split_patch_stage`` and estimated without TFLM:
the shared region is ``max(max patch head + stage buffer, tail head)`` with each head from
``converters.planning.plan_graph`` (the layout ``unplanned_arena`` would use; the offline bundle
layout is never larger in practice), MACs from the bundle's stats. Persistent sections are measured
on TFLM only for the Pareto set (peak vs MAC overhead), all in one subprocess.
"""
import dataclasses

from converters.patching.bundle import ALIGN, DEFAULT_INTERPRETERS
from converters.patching.stage import as_model, split_patch_stage, split_points
from tinyvision.errors import TinyVisionError

GRIDS = (2, 3, 4, 5, 6)
MAX_POINTS = 16  # stage lengths tried; thinned evenly (block boundaries first) beyond this


def _align(n):
    return -(-int(n) // ALIGN) * ALIGN


@dataclasses.dataclass
class Candidate:
    """One (n, p) split. shared: estimated shared region (bytes); persistent: measured TFLM tails, or None."""

    n: int
    grid: int
    shared: int
    mac_overhead: float
    flash: int
    stage_bytes: int
    persistent: int = None

    @property
    def total(self):
        return self.shared + (self.persistent or 0)


@dataclasses.dataclass
class SearchResult:
    candidates: list  # every Candidate evaluated
    pareto: list  # non-dominated in (shared, mac_overhead), ascending shared; persistent measured
    chosen: Candidate  # None when nothing fits
    best: Candidate  # lowest total among the Pareto set


def candidate_points(model, limit=MAX_POINTS):
    """Stage lengths to try: block boundaries, then the rest, thinned evenly to ``limit``.

    A block boundary is a cut whose stage tensor is no larger than the ones just before and
    after it (a bottleneck's projection or residual sum): the stage buffer has to stay in
    SRAM while the patches run, so those are the cuts worth having.
    """
    points = split_points(model)
    if len(points) <= limit:
        return points
    graph = model.main
    sizes = [graph.ops[n - 1].outputs[0].nbytes for n in points]
    blocks = [n for i, n in enumerate(points)
              if sizes[i] <= min(sizes[max(i - 1, 0)], sizes[min(i + 1, len(points) - 1)])]
    rest = [n for n in points if n not in blocks]
    if len(blocks) >= limit:
        step = len(blocks) / limit
        return sorted({blocks[int(i * step)] for i in range(limit)})
    extra = limit - len(blocks)
    step = len(rest) / extra
    return sorted(set(blocks) | {rest[int(i * step)] for i in range(extra)})


def estimate(model, n, grid, name="model.tflite"):
    """A ``Candidate`` for the first ``n`` ops split into ``grid`` x ``grid`` patches (no TFLM)."""
    bundle = split_patch_stage(model, n, grid, name)
    return _estimate_bundle(bundle, n, grid), bundle


def _estimate_bundle(bundle, n, grid):
    from converters.ir import Model
    from converters.planning import plan_graph

    heads = [_align(plan_graph(Model.from_bytes(m.data, m.file).main).size) for m in bundle.models]
    Hs, Ws, Cs = bundle.stage["shape"]
    stage = _align(Hs * Ws * Cs)
    patch_head = max(h for h, m in zip(heads, bundle.models) if m.role == "patch")
    shared = max(patch_head + stage, heads[bundle.tail])
    return Candidate(n, grid, shared, float(bundle.stats["mac_overhead"]), int(bundle.stats["flash_bytes"]), stage)


def pareto(candidates):
    """Non-dominated candidates in (shared, mac_overhead), ascending shared."""
    front = []
    for c in sorted(candidates, key=lambda c: (c.shared, c.mac_overhead)):
        if not front or c.mac_overhead < front[-1].mac_overhead:
            front.append(c)
    return front


def search(model, budget, max_mac_overhead, name="model.tflite", grids=GRIDS, log=None,
           interpreters=DEFAULT_INTERPRETERS):
    """Evaluate (n, p) candidates; returns a ``SearchResult`` whose ``chosen`` is the least-MAC Pareto
    configuration with estimated total (shared + persistent) <= ``budget`` and overhead <= ``max_mac_overhead``.
    interpreters: the bundle's arena mode: persistent is the sum of the models' sections ("resident")
    or the largest of them ("one_at_a_time").
    """
    from tinyvision.runtime.patch_runner import measure_models

    model, _ = as_model(model, name)
    points = candidate_points(model)
    if not points:
        raise TinyVisionError(f"{name} has no patch stage to split")
    candidates, bundles = [], {}
    for n in points:
        for p in grids:
            try:
                cand, bundle = estimate(model, n, p, name)
            except TinyVisionError as e:  # e.g. a grid finer than the stage tensor
                if log:
                    log(f"  skip n={n} p={p}: {e}")
                continue
            candidates.append(cand)
            bundles[(n, p)] = bundle
    if not candidates:
        raise TinyVisionError(f"no (n, grid) split of {name} could be built")
    front = pareto(candidates)
    datas, owners = [], []
    for i, c in enumerate(front):
        for m in bundles[(c.n, c.grid)].models:
            datas.append(m.data)
            owners.append(i)
    reports = measure_models(datas)
    sections = [[] for _ in front]
    for i, report in zip(owners, reports):
        sections[i].append(_align(report.tail_bytes))
    for c, sizes in zip(front, sections):
        c.persistent = sum(sizes) if interpreters == "resident" else max(sizes)
    fits = [c for c in front if c.total <= budget and c.mac_overhead <= max_mac_overhead]
    chosen = min(fits, key=lambda c: (c.mac_overhead, c.total)) if fits else None
    best = min(front, key=lambda c: (c.total, c.mac_overhead))
    return SearchResult(candidates, front, chosen, best)


def format_table(result):
    """The Pareto table as text lines."""
    lines = [f"{'n':>4} {'grid':>5} {'shared':>10} {'persistent':>11} {'total':>10} {'MAC +%':>8} {'flash':>10}"]
    for c in result.pareto:
        mark = "  <- chosen" if c is result.chosen else ""
        lines.append(f"{c.n:>4} {c.grid}x{c.grid:<3} {c.shared:>10,} {c.persistent:>11,} {c.total:>10,} "
                     f"{100 * c.mac_overhead:>7.1f}% {c.flash:>10,}{mark}")
    return lines
