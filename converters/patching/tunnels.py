"""Split a tunnel model (InputSegmentation -> PatchTunnel -> head) into per-tunnel models and a head.

After TFLite conversion such a model reads its image only through one
STRIDED_SLICE (or SLICE) per patch; each slice feeds its own chain of ops (the
tunnel) up to one input of a channel CONCATENATION (the merge), and everything
after reads only the concatenation (the head). With more than 10 tunnels the
merge is a tree of concatenations (TFLM's CONCATENATION takes at most 10 inputs),
all with the same quantization: the tunnels feed its leaves, in channel order.
``split_tunnels`` finds that structure and cuts the graph there:

* one model per tunnel: input = the slice's window of the image, output = the
  tensor the tunnel feeds into the concatenation; tunnels whose models are
  identical up to tensor names (same weights, shapes and quantization) share one;
* the head: input = the (root) concatenation's output, the stage buffer; tunnel i
  fills its channels ``[offset_i, offset_i + C_i)``.

The ops and tensors are the model's own, so the result is exact by construction
(the concatenation of same-quantization int8 inputs is a copy, and so is a tree of them).

A tunnel may also be cut into sequential segments (each its own model, run one after another
through link stage buffers), and a segment run tile by tile like a patch stage
(``converters.patching.stage``: each tile's model computes its halo from a window of the
segment's input), so that one interpreter at a time needs only one segment's or tile's memory.
"""

from typing import NamedTuple

import numpy as np

from converters.ir import Graph
from tinyvision.bundle import Box, BundleModel, Patch, Window, hwc, quant_dict
from tinyvision.bundle.schedule import IMAGE
from converters.patching.stage import (as_model, assemble_bundle, check_model, derived_model, grid_tiles,
                                      stage_description, stage_ops, tile_patches)
from tinyvision.errors import TinyVisionError

_SLICES = ("STRIDED_SLICE", "SLICE")


def _slice_window(op, image, name):
    """(y, x, h, w) of the image a SLICE / STRIDED_SLICE op reads; TinyVisionError for anything but a plain crop."""
    out = op.outputs[0]
    if any(t is not None and not t.is_constant for t in op.inputs[1:]):
        raise TinyVisionError(f"{name}: the patch slice {out.name!r} has non-constant bounds")
    begin = np.asarray(op.inputs[1].data, dtype=np.int64).reshape(-1)
    if op.opcode == "STRIDED_SLICE":
        o = op.options
        strides = np.asarray(op.inputs[3].data).reshape(-1) if len(op.inputs) > 3 and op.inputs[3] is not None else None
        if o.ellipsisMask or o.newAxisMask or o.shrinkAxisMask or (strides is not None and (strides != 1).any()):
            raise TinyVisionError(f"{name}: the patch slice {out.name!r} is not a plain crop (masks or strides)")
        begin = np.array([0 if o.beginMask & (1 << i) else b for i, b in enumerate(begin)])
    begin = np.where(begin < 0, begin + np.asarray(image.shape), begin)
    if len(out.shape) != 4 or begin[0] != 0 or begin[3] != 0 or out.shape[0] != 1 or out.shape[3] != image.shape[3]:
        raise TinyVisionError(f"{name}: the patch slice {out.name!r} {out.shape} does not keep every channel")
    y, x, h, w = int(begin[1]), int(begin[2]), out.shape[1], out.shape[2]
    if y < 0 or x < 0 or y + h > image.shape[1] or x + w > image.shape[2]:
        raise TinyVisionError(f"{name}: the patch slice {out.name!r} reads outside the image")
    return y, x, h, w


def _normalized_bytes(model):
    """The model's bytes with tensor names replaced by their index: equal for tunnels that compute the same."""
    twin = model.copy()
    for i, t in enumerate(twin.main.prune_tensors().tensors):
        t.name = f"t{i}"
    return twin.to_bytes()


def split_tunnels(model, name="model.tflite", segments=None, tiled=None, max_mac_overhead=0.15):
    """Split a tunnel model (.tflite bytes or ``Model``) into per-tunnel models and a head; a ``Bundle``.

    segments: None (one model per tunnel), "auto" (``choose_tunnel_cuts``: the cuts and tiled segments of least
    estimated SRAM within ``max_mac_overhead``; ``tiled`` is then ignored) or a list of cut positions (op counts
    into every tunnel, each a single-tensor cut). A cut tunnel runs segment after segment before the next tunnel
    starts: segment j fills a stage buffer of its own that segment j + 1 reads (in place when it reads and fills
    whole buffers), so each segment's TFLM structures live only while it runs.
    tiled: {segment index: grid}: those segments (all but the last) run patch by patch over ``grid`` tiles
    of their output, each patch reading its window of the segment's input (the image, or the stage buffer
    the segment before filled): MCUNetV2's patch stage inside a tunnel, where one of its blocks peaks.
    Raises TinyVisionError (nothing built) when the model is not image -> slices -> independent
    tunnels -> one channel concatenation (or a tree of them) -> head.
    """
    model, data = as_model(model, name)
    graph = check_model(model, name)
    image = graph.inputs[0]
    readers = graph.consumers()
    slices = readers.get(image, [])
    if not slices or any(op.opcode not in _SLICES or op.inputs[0] is not image for op in slices):
        codes = sorted({op.opcode for op in slices})
        raise TinyVisionError(f"{name} is not a tunnel model: its image feeds {codes or 'nothing'}, not only slices")

    # which slices (tunnels) every tensor depends on
    origin = {op.outputs[0]: frozenset([k]) for k, op in enumerate(slices)}
    for op in graph.ops:
        if op in slices:
            continue
        deps = frozenset().union(*(origin.get(t, frozenset()) for t in op.inputs if t is not None))
        if not deps:
            raise TinyVisionError(f"{name}: {op.opcode} {op.outputs[0].name!r} does not depend on the image")
        for t in op.outputs:
            origin[t] = deps
    merges = [op for op in graph.ops if op not in slices and len(origin[op.outputs[0]]) > 1]
    first = merges[0] if merges else None
    if first is None or first.opcode != "CONCATENATION":
        found = f"{first.opcode} {first.outputs[0].name!r}" if first is not None else "nothing"
        raise TinyVisionError(f"{name} is not a tunnel model: the first op that joins tunnels is {found}, "
                              "not a concatenation")
    every = frozenset(range(len(slices)))
    root = next((op for op in merges if origin[op.outputs[0]] == every), None)
    if root is None:
        raise TinyVisionError(f"{name}: no op joins all {len(slices)} tunnels")
    stage = root.outputs[0]
    tree, ends = _merge_tree(root, stage, origin, graph, name)
    if sorted(k for t in ends for k in origin[t]) != list(range(len(slices))):
        raise TinyVisionError(f"{name}: the concatenation {stage.name!r} does not take exactly one output per tunnel")
    head_ops = [op for op in merges if op not in tree]
    for op in head_ops:
        for t in op.inputs:
            if t is not None and not t.is_constant and len(origin.get(t, ())) == 1:
                raise TinyVisionError(f"{name}: head op {op.opcode} reads tunnel tensor {t.name!r} besides the merge")
    if any(y is stage or origin[y] != every for y in graph.outputs):
        raise TinyVisionError(f"{name}: the model's outputs must come after the tunnel merge")

    tunnels, offset = [], 0
    for end in ends:
        (k,) = origin[end]
        sl = slices[k]
        y, x, h, w = _slice_window(sl, image, name)
        window_tensor = sl.outputs[0]
        if quant_dict(window_tensor) != quant_dict(image):
            raise TinyVisionError(f"{name}: the patch slice {window_tensor.name!r} requantizes the image")
        ops = [op for op in graph.ops if op is not sl and origin[op.outputs[0]] == {k}]
        if not ops:
            raise TinyVisionError(f"{name}: tunnel {k} has no ops between its slice and the merge")
        reached = set()
        _ancestors(end, {t: op for op in ops for t in op.outputs}, reached)
        if any(op not in reached for op in ops):
            stray = next(op for op in ops if op not in reached)
            raise TinyVisionError(f"{name}: tunnel {k} op {stray.opcode} {stray.outputs[0].name!r} "
                                  "does not lead to the merge")
        hs, ws, cs = hwc(end.shape)
        tunnels.append(_Tunnel(k, ops, window_tensor, end, Window(x=x, y=y, w=w, h=h),
                               Box(x=0, y=0, c=offset, w=ws, h=hs, channels=cs)))
        offset += cs
    head = derived_model(model, Graph(ops=head_ops, inputs=[stage], outputs=list(graph.outputs),
                                      tensors=list(graph.tensors), name=graph.name))
    head_model = BundleModel.from_model("head", "tail", head.to_bytes(), head)
    if segments == "auto":
        cuts, tiled = choose_tunnel_cuts(model, tunnels[0], head_model, stage.nbytes, max_mac_overhead)
    else:
        cuts, tiled = tuple(segments or ()), dict(tiled or {})
    stages, models, patches, built = [], [], [], {}
    for tunnel in tunnels:
        runs = tunnel.runs(model, cuts, tiled, graph.name, name)
        # equal tunnels (equal bytes up to tensor names) run the same models through the same link stages
        key = tuple(_normalized_bytes(m) for run in runs for m, _, _ in run)
        if key not in built:
            links, indices = [], []
            for j, run in enumerate(runs):
                if j < len(runs) - 1:
                    links.append(len(stages))
                    stages.append(stage_description(_crossing(tunnel.ops, cuts[j])))
                label = f"tunnel_{tunnel.index}" + (f"_part{j}" if len(runs) > 1 else "")
                indices.append(_add_models(models, label, run))
            built[key] = (indices, links)
        indices, links = built[key]
        sources = [IMAGE] + links
        for j, (run, run_models) in enumerate(zip(runs, indices)):
            last = j == len(runs) - 1
            for (_, window, box), m in zip(run, run_models):
                if j == 0:  # the run reads the image: its windows lie in the tunnel's
                    window = Window(x=tunnel.window.x + window.x, y=tunnel.window.y + window.y, w=window.w, h=window.h)
                if last:
                    box = tunnel.box
                patches.append(Patch(m, window, box, stage=None if last else links[j], source=sources[j]))
    for p in patches:  # the merged stage comes last: the tail reads it
        p.stage = len(stages) if p.stage is None else p.stage
        p.source = None if p.source == p.stage - 1 else p.source
    stages.append(stage_description(stage))
    models.append(head_model)
    return assemble_bundle("tunnels", model, data, name, image, stages, models, patches)


def _add_models(models, label, run):
    """Append the run's distinct models to ``models`` (border tiles of equal geometry share one); their indices."""
    first, indices = {}, []
    for k, (part, _, _) in enumerate(run):
        data = part.to_bytes()
        if data not in first:
            first[data] = len(models)
            suffix = f"_tile{len(first) - 1}" if len(run) > 1 else ""
            models.append(BundleModel.from_model(label + suffix, "patch", data, part))
        indices.append(first[data])
    return indices


class _Tunnel:
    """One tunnel of a tunnel model: its ops (from its image slice to its merge input), window and merge box."""

    def __init__(self, index, ops, window_tensor, end, window, box):
        self.index, self.ops, self.window_tensor, self.end, self.window, self.box = (
            index, ops, window_tensor, end, window, box)

    def cut_points(self):
        """The op counts c (0 < c < len(ops)) after which one tensor alone carries the tunnel on."""
        cuts, produced = [], set()
        for c, op in enumerate(self.ops[:-1], 1):
            produced.update(op.outputs)
            crossing = {t for later in self.ops[c:] for t in later.inputs if t in produced}
            if len(crossing) == 1:
                cuts.append(c)
        return cuts

    def segment(self, source, a, b, graph_name):
        """Ops ``a..b`` as a standalone model (tensors in first-use order, not the source's, where the converter
        interleaves the tunnels' constants differently: equal tunnels then give equal bytes)."""
        ops = self.ops[a:b]
        x = self.window_tensor if a == 0 else _crossing(self.ops, a)
        y = self.end if b == len(self.ops) else _crossing(self.ops, b)
        used = [x] + [t for op in ops for t in op.inputs + op.outputs if t is not None]
        return derived_model(source, Graph(ops=ops, inputs=[x], outputs=[y], tensors=list(dict.fromkeys(used)),
                                           name=graph_name))

    def runs(self, source, cuts, tiled, graph_name, name):
        """The tunnel as runs of patches, one per stage it fills: [[(model, window, box)]]. The segments at
        ``cuts`` run as one patch of whole buffers, or over the tiles of ``tiled[j]`` for segment j (windows
        of the segment's input: the tunnel's window for the first, the stage buffer before it otherwise; the
        last segment's box is the tunnel's own, set by the caller)."""
        bounds = self.bounds(cuts, name)
        bad = sorted(j for j in tiled if not 0 <= j < len(bounds) - 2)
        if bad:
            raise TinyVisionError(f"{name}: tunnel segment {bad[0]} cannot be tiled (segments 0..{len(bounds) - 3} "
                                  "can: the last one fills the merge)")
        runs = []
        for j, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if j in tiled:
                runs.append(self.tile_patches(source, a, b, tiled[j], graph_name, name))
                continue
            part = self.segment(source, a, b, graph_name)
            x, y = part.main.inputs[0], part.main.outputs[0]
            runs.append([(part, _whole_window_of(x), _whole_box_of(y))])
        return runs

    def tile_patches(self, source, a, b, grid, graph_name, name):
        """Ops ``a..b`` split into patches over ``grid`` tiles of their output: [(patch model, window of the
        segment's input, box of its output)]."""
        x = self.window_tensor if a == 0 else _crossing(self.ops, a)
        rest = self.ops[a:]
        used = [x] + [t for op in rest for t in op.inputs + op.outputs if t is not None]
        graph = Graph(ops=rest, inputs=[x], outputs=[self.end], tensors=list(dict.fromkeys(used)), name=graph_name)
        ops, stage = stage_ops(graph, b - a, f"{name} tunnel {self.index} segment {a}..{b}")
        tiles, _, _ = grid_tiles(stage.shape, grid)
        return tile_patches(source, graph, ops, stage, tiles)

    def bounds(self, cuts, name):
        """[0, *cuts, len(ops)]; TinyVisionError for a cut that is not a single-tensor cut or out of order."""
        allowed = set(self.cut_points())
        bad = [c for c in cuts if c not in allowed]
        if bad or list(cuts) != sorted(set(cuts)):
            raise TinyVisionError(f"{name}: tunnel {self.index} cannot be cut after op {bad[0] if bad else cuts} "
                                  f"(single-tensor cuts: {sorted(allowed) or 'none'})")
        return [0, *cuts, len(self.ops)]


def _crossing(ops, c):
    """The one tensor that ops ``c..`` read from ops ``..c``."""
    produced = {t for op in ops[:c] for t in op.outputs}
    (tensor,) = {t for op in ops[c:] for t in op.inputs if t in produced}
    return tensor


def _whole_window_of(tensor):
    h, w, _ = hwc(tensor.shape)
    return Window(x=0, y=0, w=w, h=h)


def _whole_box_of(tensor):
    h, w, c = hwc(tensor.shape)
    return Box(x=0, y=0, c=0, w=w, h=h, channels=c)


def choose_tunnel_cuts(source, tunnel, head, merged_bytes, max_mac_overhead=0.15, grid=2, span=3):
    """(cuts, tiled) of least estimated SRAM for tunnels shaped like ``tunnel`` (the tunnels of a model share
    their structure). Every segment between two single-tensor cuts is planned (``converters.planning``, with
    the kernel scratch of the host and the board) and measured on TFLM (its persistent part); so is every
    segment of at most ``span`` cut intervals, but the last, run over ``grid`` x ``grid`` tiles. With one
    interpreter at a time the arena needs the largest persistent part plus the largest shared need: a
    segment's plan beside the merged stage buffer of ``merged_bytes`` (and the link stage buffers it reads
    or fills whole) or the ``head`` model's plan. For each bound on the persistent part, the segments with
    the smallest largest need (fewest segments, then untiled, on ties); the bound and split of least sum
    win, with the tiles' extra MACs at most ``max_mac_overhead`` of the tunnel's. ((), {}) when no cut beats
    the whole tunnel."""
    from converters.planning import deployment_scratch, plan_graph
    from tinyvision.analysis.cost import op_macs
    from tinyvision.bundle.derive import tflm_figures

    def planned(graph, label):
        return plan_graph(graph, scratch=deployment_scratch(graph, label), name=label).size

    def macs(ops):
        return sum(op_macs(op) for op in ops)

    end = len(tunnel.ops)
    bounds = [0, *tunnel.cut_points(), end]
    if len(bounds) == 2:
        return (), {}
    pairs = [(a, b) for i, a in enumerate(bounds) for b in bounds[i + 1:]]
    segments = {(a, b): tunnel.segment(source, a, b, "tunnel") for a, b in pairs}
    tiles = {}
    for i, a in enumerate(bounds):
        for b in bounds[i + 1:i + 1 + span]:
            if b == end or min(hwc(_crossing(tunnel.ops, b).shape)[:2]) < grid:
                continue
            try:
                tiles[(a, b)] = [m for m, _, _ in tunnel.tile_patches(source, a, b, grid, "tunnel", "tunnel")]
            except TinyVisionError:  # an op the patch builder cannot window: the segment runs whole
                continue
    tileable = list(tiles)
    label = {pair: f"tunnel segment {pair[0]}..{pair[1]}" for pair in pairs}
    jobs = ([(label[p], segments[p].to_bytes()) for p in pairs]
            + [(f"{label[p]} tile {k}", m.to_bytes()) for p in tileable for k, m in enumerate(tiles[p])]
            + [(head.file, head.data)])
    tails = iter([tail for _, tail in tflm_figures(jobs)])
    link = {c: _crossing(tunnel.ops, c).nbytes for c in bounds[1:-1]}
    options = {}  # segment (a, b) -> its _Options, whole first
    for a, b in pairs:
        whole = planned(segments[(a, b)].main, label[(a, b)])
        need = whole + (link[b] if a == 0 and b in link else 0) + (link[a] if a in link and b == end else 0)
        options[(a, b)] = [_Option(need, next(tails), 0, False)]
    budget = max_mac_overhead * macs(tunnel.ops)
    for a, b in tileable:
        plans = [planned(m.main, f"{label[(a, b)]} tile {k}") for k, m in enumerate(tiles[(a, b)])]
        persistent = max(next(tails) for _ in tiles[(a, b)])
        extra = sum(macs(m.main.ops) for m in tiles[(a, b)]) - macs(tunnel.ops[a:b])
        if extra <= budget:  # the tiles read their windows of one whole buffer and fill another
            options[(a, b)].append(_Option(max(plans) + (link[a] if a else 0) + link[b], persistent, extra, True))
    head_need = _Option(planned(head.graph(), head.file), next(tails), 0, False)
    best = None
    for bound in sorted({option.persistent for choices in options.values() for option in choices}):
        split = _least_head_split(bounds, options, bound, budget)
        if split is None:
            continue
        largest_need, persistent, chosen = split
        total = (max(persistent, head_need.persistent)
                 + max(largest_need + merged_bytes, head_need.need))
        key = (total, len(chosen), sum(option.tiled for option in chosen.values()))
        if best is None or key < best[0]:
            best = (key, chosen)
    chosen = best[1]
    cuts = tuple(a for a, _ in chosen if a)
    return cuts, {j: grid for j, pair in enumerate(chosen) if chosen[pair].tiled}


class _Option(NamedTuple):
    """One way to run a tunnel segment: its shared need and persistent part (bytes), its extra MACs, tiled?"""

    need: int
    persistent: int
    extra_macs: int
    tiled: bool


def _least_head_split(bounds, options, bound, budget):
    """(largest need, largest persistent, {segment: option}) of the split of ``bounds[0]..bounds[-1]`` at
    ``bounds`` whose segments' options all have a persistent part of at most ``bound``, the smallest largest
    need (then the fewest segments and tiled ones), their extra MACs within ``budget``; None when none is."""
    while True:
        best = {bounds[0]: (0, 0, 0, ())}  # position -> (largest need, segments, tiled, ((pair, option), ...))
        for b in bounds[1:]:
            choices = []
            for a in bounds:
                if a >= b or a not in best:
                    continue
                fits = [o for o in options[(a, b)] if o.persistent <= bound]
                if fits:
                    option = min(fits, key=lambda o: (o.need, o.tiled))
                    need, segments, tiled, path = best[a]
                    choices.append((max(need, option.need), segments + 1, tiled + option.tiled,
                                    path + (((a, b), option),)))
            if choices:
                best[b] = min(choices, key=lambda c: c[:3])
        found = best.get(bounds[-1])
        if found is None:
            return None
        chosen = dict(found[3])
        extra = [(option.extra_macs, pair) for pair, option in chosen.items() if option.tiled]
        if not extra or sum(e for e, _ in extra) <= budget:
            return found[0], max(o.persistent for o in chosen.values()), chosen
        # over the MAC budget: drop the costliest tiling and search again
        _, pair = max(extra)
        options = {**options, pair: [o for o in options[pair] if not o.tiled]}


def _merge_tree(root, stage, origin, graph, name):
    """The merge: ``root`` and the concatenations under it; ``(ops, tunnel outputs in channel order)``.

    TFLM's CONCATENATION takes at most 10 inputs, so more tunnels merge through a tree
    of channel concatenations (``tinyvision.layers.PatchTunnel``). Every concatenation in
    it must be plain (channel axis, no activation), read only by its parent, and have
    the stage's int8 quantization on every input and output: then the tree only copies
    each tunnel output into its channels of the stage, and the split can drop it.
    """
    producer, readers = graph.producers(), graph.consumers()
    rank = len(stage.shape)
    tree, ends = [], []

    def visit(op):
        out = op.outputs[0]
        if (len(out.shape) != rank or rank not in (2, 4) or op.options.axis % rank != rank - 1
                or op.options.fusedActivationFunction):
            raise TinyVisionError(f"{name}: the tunnel merge {out.name!r} {out.shape} is not a plain channel "
                                  "concatenation of (1, C) or (1, H, W, C) tensors")
        tree.append(op)
        for t in op.inputs:
            if quant_dict(t) != quant_dict(stage) or np.dtype(t.dtype) != np.int8:
                raise TinyVisionError(f"{name}: tunnel output {t.name!r} is quantized differently from the "
                                      f"concatenation {stage.name!r}: merging would requantize")
            if len(origin.get(t, ())) == 1:
                ends.append(t)
                continue
            child = producer.get(t) if t in origin else None
            if child is None or child.opcode != "CONCATENATION":
                found = f"written by {child.opcode}" if child is not None else "a constant"
                raise TinyVisionError(f"{name}: the tunnel merge {out.name!r} reads {t.name!r} ({found}), neither a "
                                      "tunnel output nor a concatenation of them")
            if readers[t] != [op] or t in graph.outputs:
                raise TinyVisionError(f"{name}: the partial tunnel merge {t.name!r} is read besides the merge")
            visit(child)

    visit(root)
    return tree, ends


def _ancestors(tensor, producer, seen):
    """Add to ``seen`` the ops among ``producer``'s that ``tensor`` depends on."""
    stack = [tensor]
    while stack:
        op = producer.get(stack.pop())
        if op is not None and op not in seen:
            seen.add(op)
            stack.extend(t for t in op.inputs if t is not None and not t.is_constant)
