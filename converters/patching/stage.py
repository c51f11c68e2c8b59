"""MCUNetV2 patch-based inference of any int8 CNN, as graph rewriting.

The first ``n`` ops of the model (the *patch stage*) run once per output tile of
the tensor they end at (the *stage tensor*), each run on the part of the image
that tile depends on; the rest (the *tail*) runs once on the assembled stage
tensor. ``split_patch_stage`` builds:

* one standalone per-patch model per distinct patch geometry: input = the
  patch's image window ``(1, h, w, C)`` (the tile's receptive field clipped to
  the image, image quantization), output = the tile ``(1, th, tw, Cs)`` of the
  stage tensor (its quantization). Each op computes exactly the region of its
  output that the tile needs: convolutions and pools become VALID, with the
  padding they had at the image border re-created only on the sides where the
  region touches it (kept as SAME when TFLite's SAME padding on the patch is the
  same padding, else an explicit PAD with the zero point, or -128 before a max
  pool); a tensor read with two different regions (a residual branch and its
  skip) is cropped with STRIDED_SLICE for the smaller reader. Every kernel sees
  exactly the values, taps and paddings it sees in the whole model, so the
  stage tensor is bit-exact;
* the tail model: ops ``n..`` with the stage tensor as input.

Regions are half-open pixel intervals ``(y0, y1, x0, x1)`` in the coordinates of
the whole tensor.
"""
import copy
import dataclasses
import hashlib

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from converters.ir import Graph, Model, Op, Tensor
from converters.patching import geometry as geo
from tinyvision.bundle import Box, Bundle, BundleModel, Patch, Window, hwc, quant_dict
from tinyvision.bundle.schema import MAX_OUTPUTS
from converters.patching.dilated import stage_view
from converters.patching.edges import SourceEdges, int8_core
from tinyvision.errors import TinyVisionError

# Metadata that stays true for a derived model (offline memory plans do not).
_KEPT_METADATA = ("min_runtime_version",)
SPLIT_CHOICE_EFFORT = 30  # packing effort of the plans that decide whether channel groups pay (compared, not kept)


# ---------------------------------------------------------------- model checks and split points


def as_model(model, name="model"):
    """(Model, bytes) from .tflite bytes or a ``Model``."""
    if isinstance(model, Model):
        return model, model.to_bytes()
    data = bytes(model)
    return Model.from_bytes(data, name), data


def core_of(model, name="model"):
    """(model, its bytes, its int8 NHWC core, ``SourceEdges``) for .tflite bytes or a ``Model``.

    The public functions below count ops of ``model`` itself (the indices ``analyze`` prints);
    they split the core, whose op ``i`` is the model's op ``i + edges.lead_ops``.
    """
    model, data = as_model(model, name)
    core, edges = int8_core(model)
    check_model(core, name)
    return model, data, core, edges


def check_model(model, name="model"):
    """Raise TinyVisionError unless ``model`` is a static-shape int8 model with one NHWC input and at most
    ``MAX_OUTPUTS`` outputs (the tail makes them all)."""
    if len(model.subgraphs) != 1:
        raise TinyVisionError(
            f"{name} has {len(model.subgraphs)} subgraphs (control flow): cannot split it into patches")
    graph = model.main
    if len(graph.inputs) != 1:
        raise TinyVisionError(f"{name} has {len(graph.inputs)} inputs: patch inference needs one image input")
    if not 1 <= len(graph.outputs) <= MAX_OUTPUTS:
        raise TinyVisionError(f"{name} has {len(graph.outputs)} outputs: a bundle's tail makes 1 to {MAX_OUTPUTS}")
    for role, t in (("input", graph.inputs[0]), *(("output", y) for y in graph.outputs)):
        if np.dtype(t.dtype) != np.int8:
            raise TinyVisionError(f"{name} is not an int8 model: its {role} {t.name!r} is {np.dtype(t.dtype).name}")
    for t in graph.used_tensors():
        # the converter marks the batch of Keras models dynamic (-1); TFLM runs batch 1 (t.shape)
        if t.is_dynamic and any(d < 0 for d in t.shape_signature[1:]):
            raise TinyVisionError(
                f"{name} has a dynamic shape: tensor {t.name!r} has shape signature {t.shape_signature}")
    for index, op in enumerate(graph.ops):
        for t in op.inputs + op.outputs:
            if t is not None and not t.is_constant and np.issubdtype(np.dtype(t.dtype), np.floating):
                raise TinyVisionError(f"{name} is not fully int8: {op.opcode} (op {index}) uses the "
                                      f"{np.dtype(t.dtype).name} tensor {t.name!r}")
    image = graph.inputs[0]
    if len(image.shape) != 4 or image.shape[0] != 1:
        raise TinyVisionError(f"{name}: the input {image.name!r} {image.shape} is not one (1, H, W, C) image")
    if image.quantization is None or image.quantization.per_channel:
        raise TinyVisionError(f"{name}: the input {image.name!r} has no per-tensor quantization")
    return graph


def _cut_tensors(graph, n):
    """Tensors the first ``n`` ops hand to the rest of the graph (and whether the rest reads the image)."""
    produced = {t for op in graph.ops[:n] for t in op.outputs}
    later = {t for op in graph.ops[n:] for t in op.inputs if t is not None} | set(graph.outputs)
    crossing = [t for op in graph.ops[:n] for t in op.outputs if t in later]
    return crossing, graph.inputs[0] in later and graph.inputs[0] not in produced


def _cut_problem(graph, n):
    """Why the cut after ``n`` ops is not one stage tensor (None when it is)."""
    if n >= len(graph.ops):
        return f"the stage must leave a tail: n must be below the model's {len(graph.ops)} ops"
    crossing, reads_image = _cut_tensors(graph, n)
    if reads_image:
        return f"op {n} onwards still read the image {graph.inputs[0].name!r}"
    if len(crossing) != 1:
        names = ", ".join(repr(t.name) for t in crossing)
        return f"after op {n - 1} the rest of the model reads {len(crossing)} tensors ({names}), not one stage tensor"
    return None


def _supported_prefix(graph):
    """(stage ops, their ends, first problem): the longest prefix of supported ops, dilated chains fused.

    ends[i] = how many original ops the first i + 1 stage ops stand for; problem = (original op
    index, opcode, reason) of the first op that cannot be in a stage, or None.
    """
    ops, ends = [], []
    for op, end in stage_view(graph):
        reason = geo.unsupported_reason(op)
        if reason is not None:
            index = end - 1 if op in graph.ops else end - 3
            return ops, ends, (index, graph.ops[index].opcode, reason)
        ops.append(op)
        ends.append(end)
    return ops, ends, None


def _allowed(graph, ends):
    return [n for n in ends if n < len(graph.ops) and _cut_problem(graph, n) is None]


def split_points(model, name="model"):
    """Every allowed stage length ``n`` (ascending): the first n ops are supported and end at one stage tensor."""
    _, _, core, edges = core_of(model, name)
    _, ends, _ = _supported_prefix(core.main)
    return [n + edges.lead_ops for n in _allowed(core.main, ends)]


def max_stage_ops(model, name="model"):
    """The largest allowed stage length ``n``; TinyVisionError when the model allows none."""
    _, _, core, edges = core_of(model, name)
    points = split_points(core, name)
    if not points:
        _, _, problem = _supported_prefix(core.main)
        why = f"op {problem[0] + edges.lead_ops} ({problem[1]}): {problem[2]}" if problem else \
            "no prefix ends at one tensor"
        raise TinyVisionError(f"{name} has no patch stage: {why}")
    return points[-1] + edges.lead_ops


def stage_ops(graph, n, name, lead=0):
    """(stage ops, stage tensor) of the first ``n`` ops; TinyVisionError naming the op or cut when n is not allowed.

    lead: ops the source model has before ``graph`` (its input edges): messages count the source's ops.
    """
    if not 1 <= n < len(graph.ops):
        if n < 1 and lead:
            raise TinyVisionError(f"cannot split {name} after {n + lead} ops: its first {lead} op(s) convert the "
                                  f"input (done while the image is read), a stage must run past op {lead - 1}")
        raise TinyVisionError(f"stage length n={n + lead} is out of range: {name} has {len(graph.ops) + lead} ops "
                              f"(the stage must end between op {lead} and the tail)")
    ops, ends, problem = _supported_prefix(graph)
    if problem is not None and problem[0] < n:
        index, opcode, reason = problem
        why = f"op {index + lead} ({opcode}) cannot be in the patch stage: {reason}"
    elif n not in ends:
        why = f"op {n - 1 + lead} is inside a dilated convolution (SPACE_TO_BATCH_ND .. BATCH_TO_SPACE_ND)"
    else:
        why = _cut_problem(graph, n)
    if why is not None:
        allowed = _allowed(graph, ends)
        hint = "; this model allows no patch stage"
        if allowed:
            end = graph.ops[allowed[-1] - 1].outputs[0]
            hint = f"; the largest allowed stage is n={allowed[-1] + lead} (ends at {end.name!r} {end.shape})"
        raise TinyVisionError(f"cannot split {name} after {n + lead} ops: {why}{hint}")
    (stage,), _ = _cut_tensors(graph, n)
    return ops[:ends.index(n) + 1], stage


def stage_tensor(model, n, name="model"):
    """The stage tensor after the first ``n`` ops; TinyVisionError naming the op or cut when n is not allowed."""
    _, _, core, edges = core_of(model, name)
    return stage_ops(core.main, n - edges.lead_ops, name, edges.lead_ops)[1]


# ---------------------------------------------------------------- tiles


def _axis_tiles(size, parts, axis):
    """Half-open intervals covering ``[0, size)``: ``parts`` = a count or a list of sizes.

    A count gives sizes that differ by at most one, the larger ones at the borders
    (first, last, second, ...): border tiles need their own models anyway, and equal
    interior tiles share one.
    """
    if isinstance(parts, (int, np.integer)):
        parts = int(parts)
        if not 1 <= parts <= size:
            raise TinyVisionError(f"cannot cut the stage tensor's {axis} of {size} pixels into {parts} tiles")
        sizes = [size // parts] * parts
        for k in range(size % parts):
            sizes[k // 2 if k % 2 == 0 else parts - 1 - k // 2] += 1
    else:
        sizes = [int(s) for s in parts]
        if sum(sizes) != size or min(sizes) < 1:
            raise TinyVisionError(f"tile {axis}s {sizes} do not add up to the stage tensor's {axis} of {size}")
    bounds = np.cumsum([0] + sizes)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def grid_tiles(stage_shape, grid):
    """Tiles ``(y0, y1, x0, x1)`` of a ``(1, H, W, C)`` stage tensor, row-major.

    grid: p (p x p), (rows, cols), or (list of tile heights, list of tile widths).
    """
    if isinstance(grid, (int, np.integer)):
        grid = (grid, grid)
    rows, cols = grid
    ys = _axis_tiles(stage_shape[1], rows, "height")
    xs = _axis_tiles(stage_shape[2], cols, "width")
    return [(y0, y1, x0, x1) for y0, y1 in ys for x0, x1 in xs], len(ys), len(xs)


# ---------------------------------------------------------------- receptive fields


@dataclasses.dataclass
class _Regions:
    """Per-tile analysis: computed region of each tensor, interval each op input reads (padding included)."""

    region: dict  # Tensor -> (y0, y1, x0, x1), inside the tensor
    need: dict  # (op index, input slot) -> (y0, y1, x0, x1), may stick out of the tensor


def _clip(box, shape):
    y0, y1, x0, x1 = box
    return max(y0, 0), min(y1, shape[1]), max(x0, 0), min(x1, shape[2])


def _union(a, b):
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def receptive_regions(ops, stage, tile):
    """Backward pass over the stage ops from ``tile`` of ``stage`` (see ``_Regions``)."""
    region, need = {stage: tile}, {}
    for index in reversed(range(len(ops))):
        op = ops[index]
        out = op.outputs[0]
        if out not in region:
            continue  # feeds nothing this tile needs
        y0, y1, x0, x1 = region[out]
        map_h, map_w = geo.axis_maps(op)
        for slot in geo.activation_slots(op):
            t = op.inputs[slot]
            box = map_h.need(y0, y1) + map_w.need(x0, x1)
            need[index, slot] = box
            inside = _clip(box, t.shape)
            if inside[0] >= inside[1] or inside[2] >= inside[3]:
                raise TinyVisionError(
                    f"tile {tile} reads only padding of {t.name!r} through {op.opcode} (op {index}): use fewer tiles"
                )
            region[t] = _union(region[t], inside) if t in region else inside
    return _Regions(region, need)


# ---------------------------------------------------------------- per-patch model


def _int32_const(name, values):
    data = np.asarray(values, dtype=np.int32)
    return Tensor(name, data.shape, np.dtype(np.int32), data=data)


def _activation(like, name, box):
    return Tensor(name, (1, box[1] - box[0], box[3] - box[2], like.shape[3]), np.dtype(np.int8),
                  quantization=like.quantization)


def _same_matches(length, out_count, axis_map, before, after):
    """True when TFLite's SAME padding over ``length`` rows gives ``out_count`` rows, ``before``/``after`` padded."""
    out = -(-length // axis_map.stride)
    total = geo.same_pad_total(length, out, axis_map.stride, axis_map.kernel)
    # with ``out_count`` rows and ``before`` rows before, the rows read after the input are ``after``
    return out == out_count and total // 2 == before and total - total // 2 == after


class _PatchBuilder:
    """Emits the ops of one patch model; crops and pads of one source tensor are made once."""

    def __init__(self):
        self.ops = []
        self._cache = {}

    def crop(self, src, begin_hw, out_box, like):
        key = ("crop", id(src), begin_hw, out_box[1] - out_box[0], out_box[3] - out_box[2])
        if key not in self._cache:
            h, w = out_box[1] - out_box[0], out_box[3] - out_box[2]
            dst = _activation(like, f"{like.name}/crop_{h}x{w}", out_box)
            begin = [0, begin_hw[0], begin_hw[1], 0]
            end = [1, begin_hw[0] + h, begin_hw[1] + w, like.shape[3]]
            self.ops.append(Op("STRIDED_SLICE",
                               [src, _int32_const(f"{dst.name}/begin", begin), _int32_const(f"{dst.name}/end", end),
                                _int32_const(f"{dst.name}/strides", [1, 1, 1, 1])],
                               [dst], schema.StridedSliceOptionsT(), version=2))
            self._cache[key] = dst
        return self._cache[key]

    def pad(self, src, pads, value, like):
        """PAD (value None: the zero point) or PADV2 with an explicit int8 value; pads = (top, bottom, left, right)."""
        key = ("pad", id(src), pads, value)
        if key not in self._cache:
            top, bottom, left, right = pads
            shape = (1, src.shape[1] + top + bottom, src.shape[2] + left + right, src.shape[3])
            dst = Tensor(f"{like.name}/pad_{top}_{bottom}_{left}_{right}", shape, np.dtype(np.int8),
                         quantization=src.quantization)
            paddings = _int32_const(f"{dst.name}/paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
            if value is None:
                op = Op("PAD", [src, paddings], [dst], schema.PadOptionsT(), version=2)
            else:
                fill = Tensor(f"{dst.name}/value", (), np.dtype(np.int8), data=np.asarray(value, dtype=np.int8),
                              quantization=src.quantization)
                op = Op("PADV2", [src, paddings, fill], [dst], schema.PadV2OptionsT(), version=2)
            self.ops.append(op)
            self._cache[key] = dst
        return self._cache[key]


def build_patch_graph(graph, ops, stage, regions):
    """The standalone graph of one patch: image window -> tile of the stage tensor."""
    image = graph.inputs[0]
    region, need = regions.region, regions.need
    mapping = {image: _activation(image, image.name, region[image])}
    builder = _PatchBuilder()
    for index, op in enumerate(ops):
        out = op.outputs[0]
        if out not in region:
            continue
        inputs = list(op.inputs)
        pads = None
        for slot in geo.activation_slots(op):
            t = op.inputs[slot]
            have, box = region[t], need[index, slot]
            inside = _clip(box, t.shape)
            src = mapping[t]
            if inside != have:  # another reader needed more of t: keep only this op's part
                src = builder.crop(src, (inside[0] - have[0], inside[2] - have[2]), inside, t)
            inputs[slot] = src
            # the op's own padding on each side: (top, bottom, left, right)
            pads = (inside[0] - box[0], box[1] - inside[1], inside[2] - box[2], box[3] - inside[3])
        options = copy.copy(op.options)
        out_box = region[out]
        if op.opcode in geo.PADS:
            full = geo.pad_amounts(op)
            if not any(pads) and not full[3].any() and out is not stage:
                mapping[out] = inputs[0]  # nothing left to pad in this patch
                continue
            channel_pads = [int(v) for v in full[3]]
            inputs[1] = _int32_const(f"{out.name}/paddings",
                                     [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], channel_pads])
        elif op.opcode in geo.WINDOWED:
            map_h, map_w = geo.axis_maps(op)
            src = inputs[0]
            oh, ow = out_box[1] - out_box[0], out_box[3] - out_box[2]
            if not any(pads):
                options.padding = geo.VALID
            elif (_same_matches(src.shape[1], oh, map_h, pads[0], pads[1])
                  and _same_matches(src.shape[2], ow, map_w, pads[2], pads[3])):
                options.padding = geo.SAME
            else:
                # zero point for convolutions (a zero tap), -128 for max pools (never the max)
                value = -128 if op.opcode == "MAX_POOL_2D" else None
                inputs[0] = builder.pad(src, pads, value, out)
                options.padding = geo.VALID
            if options.padding == geo.VALID:
                got = (map_h.out_count(inputs[0].shape[1]), map_w.out_count(inputs[0].shape[2]))
                assert got == (oh, ow), (op, got, (oh, ow))
        new_out = _activation(out, out.name, out_box)
        mapping[out] = new_out
        builder.ops.append(Op(op.opcode, inputs, [new_out], options, op.version, op.custom_code,
                              op.custom_options, op.options2))
    patch = Graph(ops=builder.ops, inputs=[mapping[image]], outputs=[mapping[stage]], tensors=[], name=graph.name)
    return patch.prune_tensors()


def tile_patches(source, graph, ops, stage, tiles, partial_expansions=False):
    """[(patch model, window of ``graph``'s input, box of ``stage``)] for each tile of the stage tensor that
    ``ops`` (the first ops of ``graph``) end at: the model computes the tile from the window, the tile's
    receptive field clipped to the input (``build_patch_graph``); ``source`` gives the models' metadata.
    partial_expansions: run the models' strided expansions a group of channels at a time when that
    shrinks the arena plan of the largest one (``_with_partial_expansions``)."""
    x = graph.inputs[0]
    graphs, patches = [], []
    for tile in tiles:
        regions = receptive_regions(ops, stage, tile)
        y0, y1, x0, x1 = regions.region[x]
        graphs.append(build_patch_graph(graph, ops, stage, regions))
        patches.append((Window(x=x0, y=y0, w=x1 - x0, h=y1 - y0),
                        Box(x=tile[2], y=tile[0], c=0, w=tile[3] - tile[2], h=tile[1] - tile[0],
                            channels=stage.shape[3])))
    if partial_expansions and graphs:
        from converters.passes import peak_live_bytes

        largest = max(range(len(graphs)), key=lambda i: peak_live_bytes(graphs[i]))
        decided = _with_partial_expansions(graphs[largest])
        if decided is not graphs[largest]:
            graphs = [decided if i == largest else _with_partial_expansions(g, planned=False)
                      for i, g in enumerate(graphs)]
    return [(derived_model(source, g), window, box) for g, (window, box) in zip(graphs, patches)]


def derived_model(source, graph):
    """A standalone model of ``graph`` (pruned) carrying the source's description and still-valid metadata."""
    graph.prune_tensors()
    metadata = {k: v for k, v in source.metadata.items() if k in _KEPT_METADATA}
    return Model([graph], metadata=metadata, description=source.description, short_tensor_names=True)


def tail_graph(graph, n, stage):
    """Ops ``n..`` of ``graph`` with the stage tensor as their input."""
    tail = Graph(ops=list(graph.ops[n:]), inputs=[stage], outputs=list(graph.outputs),
                 tensors=list(graph.tensors), name=graph.name)
    return tail.prune_tensors()


# ---------------------------------------------------------------- the split


def _side(index, count, names):
    if count == 1:
        return "full"
    return names[0] if index == 0 else names[2] if index == count - 1 else names[1]


def split_patch_stage(model, n, grid, name="model.tflite", partial_tail=True, partial_expansions=False):
    """Split ``model`` (.tflite bytes or ``Model``) into per-patch models for its first ``n`` ops and a tail.

    grid: p (p x p tiles of the stage tensor), (rows, cols), or (tile heights, tile widths).
    Returns a ``Bundle`` (kind "patch_stage") whose patches run in row-major tile order;
    patches of the same geometry share one model. Memory figures and the arena layout
    are filled in by ``converters.patching.bundle.finalize`` (``write_bundle`` calls it).
    Raises TinyVisionError (nothing built) for a model or ``n`` that cannot be split.
    A model with input or output edges (``converters.patching.edges``) is split on its int8 core:
    ``n`` still counts the model's own ops. partial_tail: split the tail's pooled convolutions within it
    (``partially_executed``); False keeps the tail's ops as the model's, numbered as they are.
    partial_expansions: strided expansions run a group of channels at a time in the patch models and (with
    partial_tail) the tail, where that shrinks their arena plan; False keeps them whole, which costs fewer
    instructions (CMSIS-NN runs a convolution of few channels less efficiently).
    """
    model, data, core, edges = core_of(model, name)
    graph = core.main
    n -= edges.lead_ops
    ops, stage = stage_ops(graph, n, name, edges.lead_ops)
    tiles, rows, cols = grid_tiles(stage.shape, grid)
    image = graph.inputs[0]

    models, index_of, patches = [], {}, []
    for t_index, (patch_model, window, box) in enumerate(tile_patches(model, graph, ops, stage, tiles,
                                                                      partial_expansions)):
        blob = patch_model.to_bytes()
        if blob not in index_of:
            r, c = divmod(t_index, cols)
            base = f"patch_{_side(r, rows, ('top', 'middle', 'bottom'))}_{_side(c, cols, ('left', 'center', 'right'))}"
            taken = {m.name for m in models}
            label, k = base, 2
            while label in taken:
                label, k = f"{base}_{k}", k + 1
            index_of[blob] = len(models)
            models.append(BundleModel.from_model(label, "patch", blob, patch_model))
        patches.append(Patch(model=index_of[blob], window=window, output=box))
    tail_model = derived_model(model, tail_graph(graph, n, stage))
    if partial_tail:
        tail_model = partially_executed(tail_model, partial_expansions)
    models.append(BundleModel.from_model("tail", "tail", tail_model.to_bytes(), tail_model))
    return assemble_bundle("patch_stage", model, data, name, image, [stage_description(stage)], models, patches,
                           edges)


def partially_executed(tail, expansions=False):
    """``tail`` with its pooled convolutions (and, with ``expansions``, its strided expansions) run a slice of
    channels at a time (Pex, ``converters.passes.split_pooled_convolutions`` and ``split_strided_expansions``)
    when that lowers its peak live bytes: once the patch stages are gone, a wide last convolution feeding a
    global pool can be the peak."""
    from converters.passes import peak_live_bytes, split_pooled_convolutions

    split = copy.deepcopy(tail)
    if any(r.split for r in split_pooled_convolutions(split)) and peak_live_bytes(split.main) < peak_live_bytes(
            tail.main):
        tail = split
    if expansions:
        main = _with_partial_expansions(tail.main)
        if main is not tail.main:
            tail = dataclasses.replace(tail, subgraphs=[main] + tail.subgraphs[1:])
    return tail


def _with_partial_expansions(graph, planned=True):
    """``graph`` with its strided expansions run a group of channels at a time
    (``converters.passes.split_strided_expansions``) when that shrinks its arena plan with the kernels'
    scratch (``planned``; else wherever the pass splits one): a patch of an inverted bottleneck's stride-2
    block holds its whole expansion window otherwise. Live bytes alone can mislead: the whole depthwise
    may overlap its input in place, its channel groups' concatenation cannot."""
    from converters.passes import split_strided_expansions
    from converters.planning import deployment_scratch, plan_graph

    def planned_size(g):  # with the kernels' scratch, which the groups' depthwise convolutions shrink too
        return plan_graph(g, scratch=deployment_scratch(g), effort=SPLIT_CHOICE_EFFORT).size

    split = copy.deepcopy(graph)
    if not any(r.split for r in split_strided_expansions(split)):
        return graph
    if planned and planned_size(split) >= planned_size(graph):
        return graph
    return split


def stage_description(stage):
    """The plan's description of a stage buffer; ``tensor`` names the source model's tensor it holds."""
    return {"shape": list(hwc(stage.shape)), "dtype": "int8", **quant_dict(stage), "tensor": stage.name}


def split_stages(model, stages, name="model.tflite", partial_expansions=False):
    """Multi-stage patch inference: a chain of patch stages, each splitting the tail of the one before.

    stages: [(n_0, grid_0), (n_1, grid_1), ...] with 0 < n_0 < n_1 < ...: op counts of ``model``
    (stage k runs ops n_{k-1}..n_k, patch by patch over its own grid, reading windows of stage
    k - 1's buffer), grids as for ``split_patch_stage``, or ``ChannelGroups`` for a channel stage
    (``converters.patching.channels``: n_k - n_{k-1} = 2, a pooled convolution run a group of channels
    per model). One entry is ``split_patch_stage``. Each split is exact, so the chain is. Patch models of
    stage k > 0 are named ``stage{k}_...``; only the last tail has its pooled convolutions split within it,
    so every n counts ``model``'s own ops. partial_expansions: as for ``split_patch_stage``. Raises
    TinyVisionError (nothing built) for a stage list that cannot be split.
    """
    from converters.patching.channels import ChannelGroups, split_channel_stage

    model, data, core, edges = core_of(model, name)
    stages = [(int(n), grid) for n, grid in stages]
    if not stages:
        raise TinyVisionError(f"{name}: no stages to split")
    ends = [n for n, _ in stages]
    if any(a >= b for a, b in zip(ends, ends[1:])):
        raise TinyVisionError(f"{name}: stage ends {ends} must increase")
    models, patches, descriptions = [], [], []
    rest, done = model, 0
    for k, (n, grid) in enumerate(stages):
        where = name if k == 0 else f"{name} (its tail from op {done})"
        split = split_channel_stage if isinstance(grid, ChannelGroups) else split_patch_stage
        part = split(rest, n - done, grid, where, partial_tail=k == len(stages) - 1,
                     partial_expansions=partial_expansions)
        first = len(models)
        for m in part.models[:part.tail]:
            if k:
                m.name = f"stage{k}_{m.name}"
            models.append(m)
        patches += [dataclasses.replace(p, model=first + p.model, stage=k) for p in part.patches]
        descriptions += part.stages
        tail = part.models[part.tail]
        rest, done = tail.parsed, n
    return assemble_bundle("patch_stage", model, data, name, core.main.inputs[0], descriptions, models + [tail],
                           patches, edges)


def whole_model(model, name="model.tflite"):
    """The unsplit ``model`` as a bundle (kind "whole_model"): no stage, no patch, its one model the
    tail reading the image. The runtime and the Arduino export run it like any bundle. A model with
    input or output edges (``converters.patching.edges``) runs its int8 core; the edges are the runtime's."""
    model, data, core, edges = core_of(model, name)
    check_model(core, name)
    models = [BundleModel.from_model("model", "tail", data if edges.trivial else _planned_core(core, name), core)]
    return assemble_bundle("whole_model", model, data, name, core.main.inputs[0], [], models, [], edges)


def _planned_core(core, name):
    """The int8 core's bytes with an offline arena plan of its own (the source's indexed the edge tensors too,
    so ``int8_core`` dropped it), checked on TFLM; as they are when TFLM's planner does as well."""
    from converters.optimize import optimize_tflite

    planned, _ = optimize_tflite(core.to_bytes(), name, reorder=False, board_exact_mean=False)
    return planned


def assemble_bundle(kind, model, data, name, image, stages, models, patches, edges=SourceEdges()):
    """A ``Bundle`` whose last model is the tail, with its source (and the source's ``edges``), image and
    stage descriptions (``stage_description``, in stage order) and stats."""
    bundle = Bundle(
        kind=kind,
        source={"file": name, "sha256": hashlib.sha256(data).hexdigest(), **edges.plan()},
        image={"shape": list(hwc(image.shape)), "dtype": "int8", **quant_dict(image)},
        stages=stages,
        models=models,
        patches=patches,
        tail=len(models) - 1,
    )
    bundle.stats = bundle_stats(bundle, model, data)
    return bundle


def bundle_stats(bundle, model, data):
    """MACs and flash of the bundle (every patch invocation; the flash image of every model file) against the
    unsplit model."""
    from converters.export.flash_image import image_size
    from tinyvision.analysis.cost import model_cost

    baseline_macs = model_cost(model).macs
    per_model = [m.macs for m in bundle.models]
    macs = sum(per_model[p.model] for p in bundle.patches) + per_model[bundle.tail]
    flash = image_size([m.data for m in bundle.models])
    return {
        "macs": int(macs),
        "mac_overhead": round(macs / baseline_macs - 1, 6) if baseline_macs else 0.0,
        "flash_bytes": int(flash),
        "baseline": {"macs": int(baseline_macs), "flash_bytes": image_size([data])},
    }
