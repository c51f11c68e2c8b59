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


def split_tunnels(model, name="model.tflite"):
    """Split a tunnel model (.tflite bytes or ``Model``) into per-tunnel models and a head; a ``Bundle``.

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

    models, index_of, patches, offset = [], {}, [], 0
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
        # tensors in first-use order, not the source's (where the converter interleaves the
        # tunnels' constants differently): equal tunnels then give equal bytes and share a model
        used = [window_tensor] + [t for op in ops for t in op.inputs + op.outputs if t is not None]
        tunnel = derived_model(model, Graph(ops=ops, inputs=[window_tensor], outputs=[end],
                                            tensors=list(dict.fromkeys(used)), name=graph.name))
        key = _normalized_bytes(tunnel)
        if key not in index_of:
            index_of[key] = len(models)
            models.append(BundleModel.from_model(f"tunnel_{k}", "patch", tunnel.to_bytes(), tunnel))
        hs, ws, cs = hwc(end.shape)
        box = Box(x=0, y=0, c=offset, w=ws, h=hs, channels=cs)
        patches.append(Patch(index_of[key], Window(x=x, y=y, w=w, h=h), box))
        offset += cs
    head = derived_model(model, Graph(ops=head_ops, inputs=[stage], outputs=list(graph.outputs),
                                      tensors=list(graph.tensors), name=graph.name))
    models.append(BundleModel.from_model("head", "tail", head.to_bytes(), head))
    return assemble_bundle("tunnels", model, data, name, image, [stage_description(stage)], models, patches)


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
