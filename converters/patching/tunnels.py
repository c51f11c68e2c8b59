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
"""

import numpy as np

from converters.ir import Graph
from tinyvision.bundle import Box, BundleModel, Patch, Window, hwc, quant_dict
from tinyvision.bundle.schedule import IMAGE
from converters.patching.stage import as_model, assemble_bundle, check_model, derived_model, stage_description
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


def split_tunnels(model, name="model.tflite", segments=None):
    """Split a tunnel model (.tflite bytes or ``Model``) into per-tunnel models and a head; a ``Bundle``.

    segments: None (one model per tunnel), "auto" (``choose_tunnel_cuts``: each tunnel cut into the
    sequential segments of least estimated SRAM) or a list of cut positions (op counts into every
    tunnel, each a single-tensor cut). A cut tunnel runs segment after segment before the next tunnel
    starts: segment j fills a stage buffer of its own that segment j + 1 reads (in place when it reads
    and fills whole buffers), so each segment's TFLM structures live only while it runs.
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
        cuts = choose_tunnel_cuts(model, tunnels[0], head_model, stage.nbytes)
    else:
        cuts = tuple(segments or ())
    stages, models, patches, built = [], [], [], {}
    for tunnel in tunnels:
        parts = tunnel.parts(model, cuts, graph.name, name)
        # equal tunnels (equal bytes up to tensor names) run the same models through the same link stages
        key = tuple(_normalized_bytes(part) for part in parts)
        if key not in built:
            links = []
            for j, part in enumerate(parts[:-1]):
                links.append(len(stages))
                stages.append(stage_description(part.main.outputs[0]))
            indices = []
            for j, part in enumerate(parts):
                label = f"tunnel_{tunnel.index}" + (f"_part{j}" if len(parts) > 1 else "")
                indices.append(len(models))
                models.append(BundleModel.from_model(label, "patch", part.to_bytes(), part))
            built[key] = (indices, links)
        indices, links = built[key]
        sources = [IMAGE] + links
        for j, (part, m) in enumerate(zip(parts, indices)):
            last = j == len(parts) - 1
            window = tunnel.window if j == 0 else _whole_window(stages[sources[j]])
            box = tunnel.box if last else _whole_box(stages[links[j]])
            patches.append(Patch(m, window, box, stage=None if last else links[j], source=sources[j]))
    for p in patches:  # the merged stage comes last: the tail reads it
        p.stage = len(stages) if p.stage is None else p.stage
        p.source = None if p.source == p.stage - 1 else p.source
    stages.append(stage_description(stage))
    models.append(head_model)
    return assemble_bundle("tunnels", model, data, name, image, stages, models, patches)


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

    def parts(self, source, cuts, graph_name, name):
        """The tunnel's segment models at ``cuts`` (op counts into the tunnel); TinyVisionError for a bad cut."""
        allowed = set(self.cut_points())
        bad = [c for c in cuts if c not in allowed]
        if bad or list(cuts) != sorted(set(cuts)):
            raise TinyVisionError(f"{name}: tunnel {self.index} cannot be cut after op {bad[0] if bad else cuts} "
                                  f"(single-tensor cuts: {sorted(allowed) or 'none'})")
        bounds = [0, *cuts, len(self.ops)]
        return [self.segment(source, a, b, graph_name) for a, b in zip(bounds, bounds[1:])]


def _crossing(ops, c):
    """The one tensor that ops ``c..`` read from ops ``..c``."""
    produced = {t for op in ops[:c] for t in op.outputs}
    (tensor,) = {t for op in ops[c:] for t in op.inputs if t in produced}
    return tensor


def _whole_window(stage):
    h, w, _ = stage["shape"]
    return Window(x=0, y=0, w=w, h=h)


def _whole_box(stage):
    h, w, c = stage["shape"]
    return Box(x=0, y=0, c=0, w=w, h=h, channels=c)


def choose_tunnel_cuts(source, tunnel, head, merged_bytes):
    """The cuts of least estimated SRAM for tunnels shaped like ``tunnel`` (the tunnels of a model share their
    structure). Every segment between two single-tensor cuts is planned (``converters.planning``, with the
    kernel scratch of the host and the board) and measured on TFLM (its persistent part): with one
    interpreter at a time the arena needs the largest persistent part plus the largest shared need, a
    segment's plan beside the merged stage buffer of ``merged_bytes`` (and the link stage buffer its output
    or input is copied to or from, for the first and last segments) or the ``head`` model's plan. For each
    bound on the persistent part, the segments with the smallest largest plan (fewest segments on ties); the
    bound and split of least sum win. () when no cut beats the whole tunnel."""
    from converters.planning import deployment_scratch, plan_graph
    from tinyvision.bundle.derive import tflm_figures

    def planned(graph, label):
        return plan_graph(graph, scratch=deployment_scratch(graph, label), name=label).size

    bounds = [0, *tunnel.cut_points(), len(tunnel.ops)]
    if len(bounds) == 2:
        return ()
    pairs = [(a, b) for i, a in enumerate(bounds) for b in bounds[i + 1:]]
    segments = {(a, b): tunnel.segment(source, a, b, "tunnel") for a, b in pairs}
    labels = {pair: f"tunnel segment {pair[0]}..{pair[1]}" for pair in pairs}
    tails = [tail for _, tail in tflm_figures([(labels[p], segments[p].to_bytes()) for p in pairs]
                                              + [(head.file, head.data)])]
    head_need = (planned(head.graph(), head.file), tails.pop())
    link = {c: _crossing(tunnel.ops, c).nbytes for c in bounds[1:-1]}
    measured = {(a, b): (planned(segments[(a, b)].main, labels[(a, b)]) + (link[b] if a == 0 and b in link else 0)
                         + (link[a] if a in link and b == bounds[-1] else 0), tail)
                for (a, b), tail in zip(pairs, tails)}
    best = None
    for bound in sorted(set(tails)):
        split = _least_head_split(bounds, measured, bound)
        if split is None:
            continue
        largest_head, cuts = split
        persistent = max(measured[(a, b)][1] for a, b in zip([0, *cuts], [*cuts, len(tunnel.ops)]))
        total = max(persistent, head_need[1]) + max(largest_head + merged_bytes, head_need[0])
        if best is None or (total, len(cuts)) < best[:2]:
            best = (total, len(cuts), tuple(cuts))
    return best[2]


def _least_head_split(bounds, measured, bound):
    """(largest head, cuts) of the split of ``bounds[0]..bounds[-1]`` at ``bounds`` whose segments all have a
    persistent part of at most ``bound`` and the smallest largest head (then the fewest segments), or None."""
    best = {bounds[0]: (0, 0, ())}  # position -> (largest head, segments, cuts)
    for b in bounds[1:]:
        options = [(max(best[a][0], measured[(a, b)][0]), best[a][1] + 1, best[a][2] + ((a,) if a else ()))
                   for a in bounds if a < b and a in best and measured[(a, b)][1] <= bound]
        if options:
            best[b] = min(options)
    end = best.get(bounds[-1])
    return None if end is None else (end[0], end[2])


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
