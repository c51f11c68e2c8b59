"""Search for a chain of patch stages (stage ends n, grids p) that fits an SRAM budget.

MCUNetV2 enumerates one patch stage: its length n and its p x p grid. The tail then runs
layer by layer and often sets the peak (a MobileNetV2's 18x18 bottlenecks after a stride-8
stage). As in msf-CNN, a second stage can split that tail again, patch by patch over the first
stage's buffer, and so on. The search:

1. evaluates every single stage (0 -> n, p) over the candidate cut points and grids;
2. extends each Pareto chain whose tail sets its peak by one more stage (n -> n', p'), for the
   next cuts whose tail is smaller, grids ascending until the new stage stops setting the peak (with
   ``partial_expansions``, while they shrink its need: a stage finer than the tail after it still pays
   once a later stage splits that tail); repeated up to ``max_stages`` stages;
3. with one interpreter at a time, cuts the tail of the Pareto chains into sequential segments, and
   a last pooled convolution into a channel stage (``converters.patching.channels``), so that the
   persistent slot holds the largest part's section rather than the whole tail's;
4. with ``deep`` (``convert --deep_search``), as msf-CNN searches, chains of any depth as well: every stage
   between two block boundaries (the first from the image, later ones up to ``DEEP_REACH`` boundaries
   long; a segment, square grids while they lower its need within the MAC budget, full-width rows, a
   channel stage) is built once, and a DP over the cuts keeps, for every shared bound, the chains not
   dominated in persistent, MACs, instructions and the one-at-a-time temporaries.

Every stage piece (from cut a to cut b over grid p) is built once with ``split_patch_stage`` on
the tail after cut a and estimated without TFLM: a stage-k patch needs its head (planned with
``converters.planning.plan_graph``) plus the buffers of stages k - 1 and k (which a 1x1 segment's
head holds: it reads and writes them in place), the tail its own head; the shared region is the
largest of those (the offline layout is rarely larger). MACs, flash and
instructions on the Cortex-M4F (``tinyvision.analysis.latency``: each patch's Invoke, the copies and, one
interpreter at a time, each re-creation) add up over the pieces. Persistent sections are measured on TFLM only
for the Pareto set (shared vs MAC overhead) and, with ``deep``, for every stage the DP chains, all in one
subprocess each time.
"""
import dataclasses
import itertools
import math

import numpy as np

from converters.export.arduino import PLAN_BYTES_PER_MODEL, PLAN_BYTES_PER_PATCH, PLAN_BYTES_PER_SECTION
from converters.patching.bundle import ALIGN, DEFAULT_INTERPRETERS
from converters.patching.channels import ChannelGroups, next_pooled_convolution, split_channel_stage
from converters.patching.stage import as_model, partially_executed, split_patch_stage, split_points
from tinyvision.bundle import BundleModel
from tinyvision.errors import TinyVisionError

GRIDS = (2, 3, 4, 5, 6)
MAX_POINTS = 16  # stage lengths tried; thinned evenly (block boundaries first) beyond this
MAX_STAGES = 3
LABEL_WIDTH = 36  # the table's first column, widened for longer chains
NEXT_CUTS = 3  # cuts tried after a chain's last stage (each with a smaller tail than the one before)
ESTIMATE_EFFORT = 100  # packing effort of the heads the search estimates with (the bundle it picks is planned in full)


def _align(n):
    return -(-int(n) // ALIGN) * ALIGN


@dataclasses.dataclass
class Candidate:
    """One chain of stages [(n, p), ...] (none: the whole model). shared: estimated shared region (bytes);
    persistent: measured TFLM persistent bytes (sum or largest section, per interpreter mode), or None;
    flash: bytes of its model files; objects: the runtime's RAM beside the arena (interpreter objects,
    op resolver, globals); sram / sram_flash_total: what the export measured once the bundle was built;
    latency_overhead: estimated Cortex-M4F instructions per inference over the unsplit model's, less 1."""

    stages: tuple
    shared: int
    mac_overhead: float
    flash: int
    latency_overhead: float = 0.0
    persistent: int = None
    objects: int = 0
    measured_sram: int = None
    measured_flash: int = None  # the whole firmware, as export counts it

    @property
    def total(self):
        """Estimated arena bytes: shared region + persistent."""
        return self.shared + (self.persistent or 0)

    @property
    def sram(self):
        """Static RAM as export counts it (arena + runtime objects): measured when built, else estimated."""
        return self.measured_sram if self.measured_sram is not None else self.total + self.objects

    @property
    def label(self):
        """'n=13 3x3' or 'n=6 4x4 -> 13 2x2'; 'unsplit' for the whole model."""
        if not self.stages:
            return "unsplit"
        return "n=" + " -> ".join(f"{n} {grid_label(p)}" for n, p in self.stages)

    @property
    def patches_flag(self):
        """The chain as ``convert --patches`` takes it: '6:4x4,13:2x2,63:c12'."""
        return ",".join(f"{n}:{grid_label(p)}" for n, p in self.stages)


def grid_label(p):
    """'3x3' for a p x p grid, '5x1' for (5, 1) rows x columns, 'c12' for ``ChannelGroups(12)``."""
    if isinstance(p, ChannelGroups):
        return str(p)
    rows, cols = p if isinstance(p, tuple) else (p, p)
    return f"{rows}x{cols}"


@dataclasses.dataclass
class SearchResult:
    candidates: list  # every Candidate evaluated
    pareto: list  # non-dominated in (SRAM, mac_overhead) among those within the flash budget, ascending SRAM
    ranked: list  # the candidates within every budget, ascending estimated SRAM: the order they are tried in
    deeper: list  # with ``deep``, its chains within every budget, ascending estimated SRAM: tried after ``ranked``
    best: Candidate  # lowest SRAM among those measured, whatever the budgets


def block_boundaries(model, points):
    """The cuts among ``points`` whose stage tensor is no larger than the ones just before and after
    it (a bottleneck's projection or residual sum): a stage buffer stays in SRAM while the patches
    run, so those are the cuts worth having."""
    graph = model.main
    sizes = [graph.ops[n - 1].outputs[0].nbytes for n in points]
    return [n for i, n in enumerate(points)
            if sizes[i] <= min(sizes[max(i - 1, 0)], sizes[min(i + 1, len(points) - 1)])]


def _drops(model, points):
    """The cuts among ``points`` whose stage tensor is smaller than the one at the cut before (after a
    strided op or a projection): where a stage buffer, and so a chain of stages, is cheapest."""
    sizes = [model.main.ops[n - 1].outputs[0].nbytes for n in points]
    return [n for i, n in enumerate(points) if i and sizes[i] < sizes[i - 1]]


def _thinned(first, rest, limit):
    """``first`` (all of it, or evenly thinned to ``limit``), then ``rest`` evenly thinned to what is left."""
    if len(first) >= limit:
        step = len(first) / limit
        return sorted({first[int(i * step)] for i in range(limit)})
    extra = limit - len(first)
    step = len(rest) / extra
    return sorted(set(first) | {rest[int(i * step)] for i in range(extra)})


def candidate_points(model, limit=MAX_POINTS):
    """Stage lengths to try: the block boundaries where the stage tensor shrinks, the other block
    boundaries (a plateau of equal tensors counts as boundaries), then the rest, thinned evenly to
    ``limit``."""
    points = split_points(model)
    if len(points) <= limit:
        return points
    blocks = block_boundaries(model, points)
    drops = [n for n in _drops(model, points) if n in blocks]
    chosen = _thinned(drops, [n for n in blocks if n not in drops], limit)
    return _thinned(chosen, [n for n in points if n not in chosen], limit)


@dataclasses.dataclass
class _Piece:
    """A stage from cut a to cut b over grid p (or the tail after a cut): its models' largest head, its
    buffer span, MACs, flash, largest AllocateTensors temporaries (``converters.planning.temp_reserve``),
    model files (persistent measured on TFLM for the Pareto set only) and estimated instructions."""

    head: int
    span: int
    macs: int
    flash: int
    temp: int
    datas: tuple
    instructions: float
    sections: list = None  # TFLM persistent bytes of each model (aligned), once measured


class _Pieces:
    """Builds and caches the stage pieces of one model and the tail after each cut (cut 0 is the image)."""

    def __init__(self, model, name, interpreters, partial_expansions=False):
        from tinyvision.analysis.cost import model_cost
        from tinyvision.analysis.latency import default_model

        self.name = name
        self.interpreters = interpreters
        self.partial_expansions = partial_expansions
        self.baseline_macs = model_cost(model).macs
        self.baseline_instructions = default_model().invoke(model.main)  # created once, at setup
        self.tails = {0: model}
        self.tail_pieces = {}
        self.pieces = {}

    def piece(self, a, b, p):
        """The ``_Piece`` (a, b, p), or None when it cannot be split (e.g. a grid finer than the stage)."""
        from tinyvision.analysis.latency import bundle_instructions

        key = (a, b, p)
        if key not in self.pieces:
            split = split_channel_stage if isinstance(p, ChannelGroups) else split_patch_stage
            try:
                bundle = split(self.tails[a], b - a, p, self.name, partial_tail=False,
                               partial_expansions=self.partial_expansions)
            except TinyVisionError:
                self.pieces[key] = None
                return None
            raw = bundle.models[bundle.tail]  # ops numbered as the model's: later stages split it
            partial = partially_executed(raw.parsed, self.partial_expansions)
            if partial is not raw.parsed:
                bundle.models[bundle.tail] = BundleModel.from_model("tail", "tail", partial.to_bytes(), partial)
            heads, temps = _heads(bundle), _temps(bundle, self.interpreters)
            patch = [i for i, m in enumerate(bundle.models) if m.role == "patch"]
            in_place = patch if p == 1 and a else ()  # a segment: the runtime copies nothing
            instructions = bundle_instructions(bundle, interpreters=self.interpreters, in_place=in_place)
            self.pieces[key] = _Piece(
                max(heads[i] for i in patch),
                _align(math.prod(bundle.last_stage["shape"])),
                sum(bundle.models[q.model].macs for q in bundle.patches),
                _flash([bundle.models[i] for i in patch]) + PLAN_BYTES_PER_PATCH * len(bundle.patches),
                max(temps[i] for i in patch),
                tuple(bundle.models[i].data for i in patch),
                instructions["stage 0"],
            )
            tail = bundle.models[bundle.tail]
            if b not in self.tail_pieces:
                self.tails[b] = raw.parsed
                self.tail_pieces[b] = _Piece(heads[bundle.tail], 0, tail.macs, _flash([tail]), temps[bundle.tail],
                                            (tail.data,), instructions["tail"])
        return self.pieces[key]

    def parts(self, stages):
        """The pieces of a chain and its tail."""
        cuts = [0] + [n for n, _ in stages]
        return [self.pieces[(a, b, p)] for a, (b, p) in zip(cuts, stages)] + [self.tail_pieces[cuts[-1]]]

    def span(self, cut):
        """Bytes the stage buffer at ``cut`` takes in the arena (0 for the image: it is not in it)."""
        return _align(self.tails[0].main.ops[cut - 1].outputs[0].nbytes) if cut else 0

    def need(self, a, b, p):
        """Shared bytes stage (a, b, p) needs while it runs: its largest head beside the buffers of stages
        a and b."""
        piece = self.pieces[(a, b, p)]
        if p == 1 and a:  # a segment: its input and output tensors are the stage buffers (in place)
            return max(piece.head, self.span(a) + piece.span)
        return self.span(a) + piece.head + piece.span

    def prefix(self, stages):
        """(shared bytes, MACs) of a chain's stages without its tail."""
        cuts = [0] + [n for n, _ in stages]
        peak = macs = 0
        for a, (b, p) in zip(cuts, stages):
            peak, macs = max(peak, self.need(a, b, p)), macs + self.pieces[(a, b, p)].macs
        return peak, macs

    def chain(self, stages):
        """The ``Candidate`` of a chain whose pieces have all been built. With interpreters created
        one at a time, the stage buffers alive together lie above the largest model's temporaries."""
        cuts = [0] + [n for n, _ in stages]
        *pieces, tail = self.parts(stages)
        peak, macs = self.prefix(stages)
        reserve = max([tail.temp] + [q.temp for q in pieces])
        peak = max([peak, tail.head] + [reserve + self.span(a) + q.span for a, q in zip(cuts, pieces)])
        flash = tail.flash + sum(q.flash for q in pieces)
        macs += tail.macs
        overhead = round(macs / self.baseline_macs - 1, 6) if self.baseline_macs else 0.0
        instructions = tail.instructions + sum(q.instructions for q in pieces)
        slower = round(instructions / self.baseline_instructions - 1, 6) if self.baseline_instructions else 0.0
        return Candidate(tuple(stages), peak, overhead, flash, slower)


def _flash(models):
    """Estimated flash bytes of bundle models in one flash image (``converters.export.flash_image``: the
    border variants of a stage share their weights) once ``finalize`` has added their offline plans (4 B
    per tensor and a metadata entry), with their entries in the sketch's plan tables: the files less
    every vector and name that an earlier one already holds (each with its 4 B length). Models of
    different pieces share little, so a chain's flash is the sum over its pieces."""
    seen, flash = set(), 0
    for m in models:
        graph = m.graph()
        flash += (len(m.data) + _align(4 * len(graph.tensors) + 64) + PLAN_BYTES_PER_MODEL + PLAN_BYTES_PER_SECTION
                  + len(m.name) + 1)
        index = {id(t): i for i, t in enumerate(graph.tensors)}
        vectors = [np.asarray([index.get(id(t), -1) for t in op_io], np.int32)
                   for op in graph.ops for op_io in (op.inputs, op.outputs)]
        for t in graph.tensors:
            vectors += [t.name.encode(), np.asarray(t.shape, np.int32)]
            vectors += [] if t.quantization is None else [t.quantization.scale, t.quantization.zero_point]
            vectors += [t.data] if t.is_constant else []
        for v in vectors:
            key = v if isinstance(v, bytes) else (v.dtype.str, v.tobytes())
            if key in seen:
                flash -= 4 + (len(v) if isinstance(v, bytes) else v.nbytes)
            seen.add(key)
    return flash


def _prefix_front(pieces, chains):
    """The chains not dominated in (shared bytes, MACs) of their stages."""
    front = []
    for chain in sorted(chains, key=pieces.prefix):
        if not front or pieces.prefix(chain)[1] < pieces.prefix(front[-1])[1]:
            front.append(chain)
    return front


def _temps(bundle, interpreters):
    from converters.planning import temp_reserve

    return [temp_reserve([m.graph()], interpreters) for m in bundle.models]


def _heads(bundle):
    """Each model's planned head with the kernel scratch of the host and the board (as the bundle plans it)."""
    from converters.planning import deployment_scratch, plan_graph

    return [_align(plan_graph(m.graph(), scratch=deployment_scratch(m.graph(), m.name), effort=ESTIMATE_EFFORT).size)
            for m in bundle.models]


def pareto(candidates, key=lambda c: c.shared):
    """Non-dominated candidates in (``key``, mac_overhead), ascending ``key``."""
    front = []
    for c in sorted(candidates, key=lambda c: (key(c), c.mac_overhead)):
        if not front or c.mac_overhead < front[-1].mac_overhead:
            front.append(c)
    return front


def _front(candidates, first, figures):
    """The candidates, ascending (``first``, *``figures``), that no earlier one matches or beats in every one
    of ``figures`` (functions of a candidate)."""
    front = []
    for c in sorted(candidates, key=lambda c: (first(c), *(f(c) for f in figures))):
        if not any(all(f(k) <= f(c) for f in figures) for k in front):
            front.append(c)
    return front


def _flash_front(candidates):
    """Non-dominated candidates in (shared, mac_overhead, flash): those whose persistent is worth measuring
    (a point with more shared bytes but fewer flash bytes may be the only one that fits the flash)."""
    return _front(candidates, lambda c: c.shared, (lambda c: c.mac_overhead, lambda c: c.flash))


def _measured_front(candidates):
    """Non-dominated candidates in (estimated SRAM, mac_overhead, flash, latency_overhead), their persistent
    measured: the deep search's chains of one shared region differ in persistent and instructions."""
    return _front(candidates, lambda c: c.sram,
                  (lambda c: c.mac_overhead, lambda c: c.flash, lambda c: c.latency_overhead))


def search(model, max_mac_overhead, name="model.tflite", grids=GRIDS, log=None, interpreters=DEFAULT_INTERPRETERS,
           max_stages=MAX_STAGES, sram_budget=None, flash_budget=None, objects=0, max_latency_overhead=None,
           partial_expansions=False, deep=False):
    """Evaluate stage chains; returns a ``SearchResult`` whose ``ranked`` lists the chains with overhead
    <= ``max_mac_overhead``, estimated latency overhead <= ``max_latency_overhead``, estimated SRAM (shared + persistent + ``objects``) <= ``sram_budget`` and
    model flash <= ``flash_budget`` (None: no limit), smallest estimated SRAM first.
    interpreters: the bundle's arena mode: persistent is the sum of the models' sections ("resident")
    or the largest of them ("one_at_a_time"). max_stages: 1 is MCUNetV2's single patch stage.
    objects: the runtime's RAM beside the arena (``converters.export.arduino.fit_report``).
    partial_expansions: the chains' patch models and tails run strided expansions a group of channels at a
    time (``split_stages``); build the chosen chain the same way.
    deep: besides the chains grown up to ``max_stages`` from the best shorter ones, chains of any depth over
    every block boundary (``_deep_chains``): slower, finds the deep chains of the smallest SRAM.
    """
    model, _ = as_model(model, name)
    candidates = _chains(model, name, grids, log, interpreters, max_stages, partial_expansions)
    pieces = candidates.pieces

    def measured(chains):
        _measure_persistent(pieces, chains)
        for c in chains:
            sizes = [size for part in pieces.parts(c.stages) for size in part.sections]
            c.persistent, c.objects = sum(sizes) if interpreters == "resident" else max(sizes), objects
        return chains

    def eligible(c):
        return (c.mac_overhead <= max_mac_overhead and (flash_budget is None or c.flash <= flash_budget)
                and (max_latency_overhead is None or c.latency_overhead <= max_latency_overhead))

    def ranked(chains):
        return sorted((c for c in chains if eligible(c) and (sram_budget is None or c.sram <= sram_budget)),
                      key=lambda c: (c.sram, c.mac_overhead))

    front = measured(_flash_front(candidates))
    if interpreters == "one_at_a_time":
        segmented = measured(_with_segments(model, pieces, [c for c in front if eligible(c)]))
        candidates += segmented
        front += segmented
    deeper = []
    if deep:  # every deep chain's persistent was measured with its stages
        chains = measured(_deep_chains(model, pieces, max_mac_overhead, log))
        candidates += chains
        grown = {c.stages for c in front}
        deeper = [c for c in _measured_front(chains) if c.stages not in grown]
    within_flash = [c for c in front + deeper if flash_budget is None or c.flash <= flash_budget]
    best = min(front + deeper, key=lambda c: (c.sram, c.mac_overhead))
    return SearchResult(list(candidates), pareto(within_flash, key=lambda c: c.sram), ranked(front), ranked(deeper),
                        best)


def _measure_persistent(pieces, chains):
    """TFLM's persistent bytes of every model of the chains' pieces not measured yet (one subprocess)."""
    _measure_parts([part for c in chains for part in pieces.parts(c.stages)])


def _measure_parts(parts):
    """TFLM's persistent bytes of every model of ``parts`` (``_Piece``) not measured yet (one subprocess)."""
    from tinyvision.runtime.tflm import measure_many

    parts = list({id(part): part for part in parts if part.sections is None}.values())
    if not parts:
        return
    reports = iter(measure_many([data for part in parts for data in part.datas]))
    for part in parts:
        part.sections = [_align(next(reports).tail_bytes) for _ in part.datas]


SEGMENT_PARTS = (2, 3, 4, 5)  # sequential models a tail may be cut into


def _persistent_weight(op):
    """A rough share of TFLM's persistent bytes an op takes: its node and per-channel requantization
    (multiplier and shift per scale of its weights); only used to place segment cuts."""
    weights = op.inputs[1] if len(op.inputs) > 1 and op.inputs[1] is not None else None
    q = weights.quantization if weights is not None and weights.is_constant else None
    scales = 0 if q is None or q.scale is None else int(np.size(q.scale))
    return 200 + (8 * scales if scales > 1 else 0)


def _balanced_cuts(weight, later, a, parts):
    """Cuts among ``later`` that part ops a.. into ``parts`` runs of least largest ``weight`` (the
    running sum of op weights from op a), or None when there are too few cuts."""
    cuts = [n for n in later if n - a - 1 < len(weight) - 1]
    if len(cuts) < parts - 1:
        return None

    def run(lo, hi):  # weight of ops lo..hi - 1 (cut numbers; a is the start)
        return weight[hi - a - 1] - (weight[lo - a - 1] if lo > a else 0)

    end = a + len(weight)
    # best[j][i]: (largest run, cuts) for ops a..cuts[i] - 1 in j + 1 runs ending at cuts[i]
    best = [[(run(a, n), (n,)) for n in cuts]]
    for _ in range(parts - 2):
        best.append([min(((max(prev[0], run(cuts[h], n)), prev[1] + (n,))
                          for h, prev in enumerate(best[-1][:i])), default=(math.inf, ())) for i, n in enumerate(cuts)])
    largest, chosen = min((max(prev[0], run(cuts[i], end)), prev[1]) for i, prev in enumerate(best[-1]))
    return chosen if largest < math.inf else None


def _with_segments(model, pieces, chains):
    """The chains with their tail cut into sequential models (last "stages" of one 1x1 tile each: the
    first runs on the whole stage buffer, the next reads its output, the tail reads the last in place).
    With one interpreter at a time the persistent slot holds the largest model's section, and the
    tail's is often the largest: cut in 2 to 5 parts of balanced persistent estimates, it takes a
    fraction of that."""
    ops = model.main.ops
    points = split_points(model)
    grown = []
    for a in sorted({c.stages[-1][0] for c in chains}):
        # no cut whose buffer is as large as the tail's own peak (a classifier's last expansion)
        later = [n for n in points if n > a and pieces.span(n) < pieces.tail_pieces[a].head]
        weight = list(itertools.accumulate(_persistent_weight(op) for op in ops[a:]))  # of ops a..a + i
        splits = {_balanced_cuts(weight, later, a, parts) for parts in SEGMENT_PARTS}
        if later:  # the same with the last cut as late as it goes: a classifier head weighs more than estimated
            last = later[-1]
            splits |= {cuts + (last,) for cuts in (_balanced_cuts(weight[:last - a], later[:-1], a, parts - 1)
                                                   for parts in SEGMENT_PARTS[1:]) if cuts is not None}
            splits.add((last,))
        splits.discard(None)
        for tail_stages in sorted(set(_tail_stages(model, points, a, splits)), key=str):
            if all(pieces.piece(x, y, p) is not None for x, (y, p) in zip((a,) + tuple(n for n, _ in tail_stages),
                                                                            tail_stages)):
                grown += [pieces.chain(c.stages + tail_stages) for c in chains if c.stages[-1][0] == a]
    return grown


def _tail_stages(model, points, a, splits):
    """The stages each segment split (a tuple of cuts after ``a``) adds to a chain ending at ``a``; and where a
    pooled convolution follows (op P, its pool P + 1: a classifier's last convolution), the split ended
    at P (its last cut there, or P added) and a channel stage (P + 2, its ``ChannelGroups``): each group of
    the convolution's channels its own model, so no model holds all of their requantization data."""
    for cuts in splits:
        yield tuple((b, 1) for b in cuts)
    found = next_pooled_convolution(model, a)
    if found is None or (found[0] > a and found[0] not in points):
        return
    convolution, groups = found
    channels = ((convolution + 2, groups),)
    for cuts in splits | {()}:
        before = tuple(b for b in cuts if b < convolution)
        ends = {before + (convolution,), before[:-1] + (convolution,)} if convolution > a else {()}
        for segments in ends:
            yield tuple((b, 1) for b in segments) + channels


class _Chains(list):
    """The candidates of one model, with the ``_Pieces`` they are made of."""

    pieces = None


def _chains(model, name, grids, log, interpreters, max_stages, partial_expansions):
    """Every chain of stages worth estimating (a ``_Chains`` of ``Candidate``, persistent not measured)."""
    points = candidate_points(model)
    if not points:
        raise TinyVisionError(f"{name} has no patch stage to split")
    blocks = set(block_boundaries(model, split_points(model)))
    pieces = _Pieces(model, name, interpreters, partial_expansions)
    prefixes = {}  # cut -> non-dominated chains ending there, in (peak of their pieces, MACs of their pieces)
    for n in points:
        for p in grids:
            if pieces.piece(0, n, p) is None:
                if log:
                    log(f"  skip n={n} p={p}: cannot split")
                continue
            prefixes.setdefault(n, []).append(((n, p),))
    if not prefixes:
        raise TinyVisionError(f"no (n, grid) split of {name} could be built")
    candidates = _Chains(pieces.chain(c) for chains in prefixes.values() for c in chains)
    candidates.pieces = pieces
    for depth in range(1, max_stages):
        grown = {}
        for a in sorted(prefixes):
            chains = [c for c in _prefix_front(pieces, prefixes[a]) if len(c) == depth
                      and pieces.prefix(c)[0] < pieces.tail_pieces[a].head]  # the tail sets their peak
            if not chains:
                continue
            for b in _next_cuts(pieces, points, blocks, a):
                coarser = math.inf
                for p in grids:
                    piece = pieces.piece(a, b, p)
                    if piece is None:
                        continue
                    need = pieces.span(a) + piece.head + piece.span
                    if partial_expansions and need >= coarser:
                        break  # finer grids only add MACs
                    coarser = need
                    grown.setdefault(b, []).extend(c + ((b, p),) for c in chains)
                    if not partial_expansions and need <= pieces.tail_pieces[b].head:
                        break  # the tail sets the peak (with partial execution a later stage may split it)
        if not grown:
            break
        for b, chains in grown.items():
            prefixes.setdefault(b, []).extend(chains)
            candidates += [pieces.chain(c) for c in chains]
    return candidates


def _next_cuts(pieces, points, blocks, a):
    """Up to NEXT_CUTS cuts after ``a`` with ever smaller tails: per tail size, its first block
    boundary (a bottleneck's projection rather than its expansion), else its first cut."""
    levels, bound = {}, pieces.tail_pieces[a].head
    for b in points:
        if b <= a or (b not in pieces.tail_pieces and pieces.piece(a, b, 2) is None):
            continue
        head = pieces.tail_pieces[b].head
        if head < bound and (head not in levels or (b in blocks and levels[head] not in blocks)):
            levels[head] = b
    return [levels[head] for head in sorted(levels, reverse=True)][:NEXT_CUTS]


DEEP_REACH = 3  # block boundaries a stage after the first may span: longer ones are chains of shorter ones


@dataclasses.dataclass(frozen=True)
class _Step:
    """One step of a deep chain: stage (a, b, p), or the tail after cut a (b None). need: shared bytes while
    it runs; pair: its stage buffers (with one interpreter at a time they lie above the largest model's
    temporaries, ``temp``); section: its models' persistent bytes (largest, or sum when resident); macs;
    instructions: estimated on the Cortex-M4F."""

    a: int
    b: int
    p: object
    need: int
    pair: int
    temp: int
    section: int
    macs: int
    instructions: float


def _stage_grids(pieces, a, b, spare_macs, original_macs):
    """Grids worth a stage from cut a to cut b: a segment (a > 0), then square grids ascending while each
    lowers the stage's need and its extra MACs stay within ``spare_macs``, then (a > 0) full-width tiles
    one output row high, which read a band of the stage buffer before."""
    height = pieces.tails[0].main.ops[b - 1].outputs[0].shape[1]

    def fits(p):
        piece = pieces.piece(a, b, p)
        return piece is not None and piece.macs - original_macs <= spare_macs

    grids = [1] if a and fits(1) else []
    coarser = math.inf
    for q in range(2, height + 1):
        if not fits(q):
            break
        need = pieces.need(a, b, q)
        if need >= coarser:
            break
        coarser = need
        grids.append(q)
    if a and height > 2 and fits((height, 1)):
        grids.append((height, 1))
    return grids


def _deep_steps(model, pieces, max_mac_overhead, log):
    """Every stage (a, b, p) between block boundaries (the first from the image to any boundary, later ones
    up to ``DEEP_REACH`` boundaries on, a pooled convolution as a channel stage) whose extra MACs fit
    ``max_mac_overhead``, and the tail after every cut, as ``_Step``; their persistent measured on TFLM."""
    from tinyvision.analysis.cost import op_macs

    cuts = block_boundaries(model, split_points(model))
    pooled = next_pooled_convolution(model, 0)
    channel_end = pooled[0] + 2 if pooled else None
    original = list(itertools.accumulate([0] + [op_macs(op) for op in model.main.ops]))
    spare = max_mac_overhead * pieces.baseline_macs
    stages = []
    for a in sorted({0, *cuts} | ({channel_end} if pooled else set())):
        if a and a not in pieces.tails:
            continue  # no stage ends there
        ends = [b for b in cuts if b > a]
        for b in ends if a == 0 else ends[:DEEP_REACH]:
            grids = _stage_grids(pieces, a, b, spare, original[b] - original[a])
            if a == 0 and not grids:
                break  # a longer first stage only reads larger windows
            stages += [(a, b, p) for p in grids]
        if pooled and a == pooled[0] and pieces.piece(a, channel_end, pooled[1]) is not None:
            stages.append((a, channel_end, pooled[1]))
        if log:
            log(f"  deep search: {len(stages)} stages built up to cut {a}")
    tails = sorted(pieces.tail_pieces)
    _measure_parts([pieces.pieces[s] for s in stages] + [pieces.tail_pieces[a] for a in tails])
    combine = max if pieces.interpreters == "one_at_a_time" else sum
    steps = []
    for a, b, p in stages:
        piece = pieces.pieces[(a, b, p)]
        steps.append(_Step(a, b, p, pieces.need(a, b, p), pieces.span(a) + piece.span, piece.temp,
                           combine(piece.sections), piece.macs, piece.instructions))
    for a in tails:
        tail = pieces.tail_pieces[a]
        steps.append(_Step(a, None, None, tail.head, 0, tail.temp, combine(tail.sections), tail.macs,
                           tail.instructions))
    return steps


def _dominates(label, other):
    """Whether ``label`` is no worse than ``other`` in every figure (all but the stages)."""
    return all(x <= y for x, y in zip(label[:-1], other[:-1]))


def _deep_paths(steps, bound, one_at_a_time):
    """The chains (tuples of (b, p)) from the image to the tail whose steps all need at most ``bound``
    shared bytes, non-dominated in (persistent, MACs, instructions, largest stage buffers, largest
    temporaries): a label-setting DP over the cuts, in order. With one interpreter at a time the largest
    stage buffers plus the largest temporaries must fit the bound too, and persistent is the largest
    section, else the sum."""
    by_start = {}
    for step in steps:
        if step.need <= bound and (not one_at_a_time or step.pair + step.temp <= bound):
            by_start.setdefault(step.a, []).append(step)
    combine = max if one_at_a_time else (lambda x, y: x + y)
    labels = {0: [(0, 0, 0, 0, 0, ())]}  # cut -> [(persistent, MACs, instructions, pair, temp, stages)]
    found = []
    for a in sorted(by_start):
        for section, macs, instructions, pair, temp, stages in labels.pop(a, []):
            for step in by_start[a]:
                label = (combine(section, step.section), macs + step.macs, instructions + step.instructions,
                         max(pair, step.pair), max(temp, step.temp),
                         stages + (() if step.b is None else ((step.b, step.p),)))
                if one_at_a_time and label[3] + label[4] > bound:
                    continue
                target = found if step.b is None else labels.setdefault(step.b, [])
                if not any(_dominates(x, label) for x in target):
                    target[:] = [x for x in target if not _dominates(label, x)] + [label]
    return [label[-1] for label in found if label[-1]]


def _deep_chains(model, pieces, max_mac_overhead, log):
    """Chains of any depth (msf-CNN's search over cut points) as ``Candidate``: every ``_deep_steps`` stage
    (built with ``pieces``, persistent measured), then for each shared bound (every step's need) the chains
    non-dominated under it (``_deep_paths``)."""
    steps = _deep_steps(model, pieces, max_mac_overhead, log)
    chains = set()
    for bound in sorted({step.need for step in steps}):
        chains.update(_deep_paths(steps, bound, pieces.interpreters == "one_at_a_time"))
    return [pieces.chain(stages) for stages in sorted(chains, key=str)]


def format_table(result, chosen=None, unsplit=None):
    """The Pareto table as text lines: SRAM (arena + runtime objects; TFLM-measured through the real layout
    where the point was built, else estimated: shared region estimated, persistent measured), MACs,
    estimated Cortex-M4F instructions (``tinyvision.analysis.latency``), flash;
    ``unsplit`` (the measured whole model), when given, last. ``result`` None: that row alone."""
    rows = [] if result is None else list(result.pareto) + [
        c for c in result.ranked if c.measured_sram is not None and c not in result.pareto]
    rows = sorted(rows, key=lambda c: (c.sram, c.mac_overhead)) + ([unsplit] if unsplit is not None else [])
    labels = ["unsplit (measured)" if c is unsplit else c.label[2:] for c in rows]
    width = max([LABEL_WIDTH] + [len(label) for label in labels])
    lines = [f"{'stages (n grid)':<{width}} {'shared':>8} {'persistent':>10} {'SRAM':>9} {'':<9} {'MAC +%':>7} "
             f"{'M4 instr +%':>11} {'model flash':>11}"]
    for c, label in zip(rows, labels):
        mark = "  <- chosen" if c is chosen else ""
        how = "measured" if c.measured_sram is not None else "estimate"
        lines.append(f"{label:<{width}} {c.shared:>8,} {c.persistent:>10,} {c.sram:>9,} {how:<9} "
                     f"{100 * c.mac_overhead:>6.1f}% {100 * c.latency_overhead:>10.1f}% {c.flash:>11,}{mark}")
    return lines
