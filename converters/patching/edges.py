"""The int8 NHWC core of a model people export, and what the runtime does at its edges instead.

Exporters wrap the int8 network in ops that are no part of it:

* a float input quantized by a leading QUANTIZE (MCUNet / TinyEngine models, float I/O);
* an NCHW input turned into NHWC by a leading TRANSPOSE with perm (0, 2, 3, 1) (PyTorch exports);
* a float output made by a DEQUANTIZE (one per output of a model with several).

Patch splitting works on the core between them. The bundle's image is the core's int8 NHWC
input: on the device the image sources produce it directly (camera pixels -> int8), so a float
window (4x the bytes) never enters the arena. On the host, ``SourceEdges`` turns the source
model's own inputs into that image (TFLM's QUANTIZE rounding, the transpose) and the tail's
int8 outputs back into the source's outputs (TFLM's DEQUANTIZE arithmetic), bit for bit.

Op counts (``n`` of a stage) stay those of the model being split, edges included, so the op
indices ``analyze`` prints for it are the ones a ``--patches`` chain names: ``lead_ops`` converts.
Output DEQUANTIZEs may sit anywhere after the op that makes their output (a detector exports
each scale's output as soon as it is computed), but a stage never ends after an output is made
(the rest of the model would read two tensors), so every cut lies before them all.
"""
import dataclasses

import numpy as np

from tinyvision.errors import TinyVisionError

NCHW_TO_NHWC = (0, 2, 3, 1)


@dataclasses.dataclass(frozen=True)
class SourceEdges:
    """What the source model does around its core.

    lead_ops: ops before the core (QUANTIZE and/or TRANSPOSE, 0..2); input_shape / input_dtype: the
    source's input (with batch); layout: "NCHW" when the source transposes its input, else "NHWC";
    image_quant: (scale, zero point) of the core's input, which a float input is quantized with;
    output_quants: per output of the source, the (scale, zero point) the tail's int8 output is
    dequantized with; None when the source's outputs are the core's.
    """

    lead_ops: int = 0
    input_shape: tuple = None
    input_dtype: str = "int8"
    layout: str = "NHWC"
    image_quant: tuple = None
    output_quants: tuple = None

    @property
    def trivial(self):
        return self.lead_ops == 0 and self.output_quants is None

    def plan(self):
        """The optional ``input`` / ``output`` entries of the plan's ``source`` (docs/bundle-format.md)."""
        if self.trivial:
            return {}
        entries = {}
        if self.lead_ops:
            entries["input"] = {"shape": list(self.input_shape), "dtype": self.input_dtype, "layout": self.layout}
        if self.output_quants is not None:
            described = [{"dtype": "float32", "scale": scale, "zero_point": zero_point}
                         for scale, zero_point in self.output_quants]
            entries.update({"output": described[0]} if len(described) == 1 else {"outputs": described})
        return entries

    @classmethod
    def from_plan(cls, plan):
        """The edges a plan records (trivial when its source has no ``input`` / ``output`` entries)."""
        source, image = plan.get("source", {}), plan["image"]
        given = source.get("input")
        outputs = [source["output"]] if source.get("output") is not None else source.get("outputs")
        edges = cls(image_quant=(float(image["scale"]), int(image["zero_point"])))
        if given is not None:
            lead = int(given["dtype"] != "int8") + int(given["layout"] == "NCHW")
            edges = dataclasses.replace(edges, lead_ops=lead, input_shape=tuple(given["shape"]),
                                        input_dtype=given["dtype"], layout=given["layout"])
        if outputs is not None:
            edges = dataclasses.replace(edges, output_quants=tuple(
                (float(output["scale"]), int(output["zero_point"])) for output in outputs))
        return edges

    def images(self, inputs):
        """Source-model inputs (N, *input_shape[1:]) -> the bundle's int8 NHWC images (N, H, W, C)."""
        x = np.asarray(inputs)
        if self.input_dtype != "int8":
            x = quantize_like_tflm(x, *self.image_quant)
        if self.layout == "NCHW":
            x = np.transpose(x, NCHW_TO_NHWC)
        return np.ascontiguousarray(x, dtype=np.int8)

    def outputs(self, tail_outputs):
        """The tail's int8 outputs (an array, or a list of them for several outputs) -> the source model's."""
        if self.output_quants is None:
            return tail_outputs
        if len(self.output_quants) == 1:
            return dequantize_like_tflm(tail_outputs, *self.output_quants[0])
        return [dequantize_like_tflm(y, *q) for y, q in zip(tail_outputs, self.output_quants)]


def quantize_like_tflm(x, scale, zero_point):
    """float -> int8 exactly as TFLM's QUANTIZE (``reference_ops::AffineQuantize``): the float32 divided by
    the float32 scale, rounded half away from zero (``std::round``), plus the zero point, clamped."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    whole = np.trunc(v)
    rounded = np.where(np.abs(v - whole) >= 0.5, whole + np.sign(v), whole)  # np.round would go half to even
    return np.clip(rounded.astype(np.int64) + zero_point, -128, 127).astype(np.int8)


def dequantize_like_tflm(q, scale, zero_point):
    """int8 -> float32 exactly as TFLM's DEQUANTIZE: ``float(double(scale) * (q - zero_point))``."""
    return (np.float64(np.float32(scale)) * (np.asarray(q, np.int64) - zero_point)).astype(np.float32)


def _only_reader(graph, tensor):
    readers = graph.consumers().get(tensor, [])
    return readers[0] if len(readers) == 1 and tensor not in graph.outputs else None


def _per_tensor(t):
    q = t.quantization
    return q is not None and not q.per_channel


def _lead_op(graph, tensor, index):
    """The op at ``index`` when it is an input edge reading ``tensor`` ("QUANTIZE" / "TRANSPOSE"), else None."""
    if index >= len(graph.ops) or _only_reader(graph, tensor) is not graph.ops[index]:
        return None
    op = graph.ops[index]
    out = op.outputs[0]
    if (op.opcode == "QUANTIZE" and np.dtype(tensor.dtype) == np.float32 and np.dtype(out.dtype) == np.int8
            and _per_tensor(out)):
        return "QUANTIZE"
    if (op.opcode == "TRANSPOSE" and len(tensor.shape) == 4 and op.inputs[1] is not None and op.inputs[1].is_constant
            and tuple(int(v) for v in op.inputs[1].data.reshape(-1)) == NCHW_TO_NHWC):
        return "TRANSPOSE"
    return None


def _output_dequantize(graph, result):
    """The DEQUANTIZE op that makes the graph output ``result`` from an int8 per-tensor tensor only it reads (or
    None)."""
    op = graph.producers().get(result)
    if (op is None or op.opcode != "DEQUANTIZE" or np.dtype(result.dtype) != np.float32
            or np.dtype(op.inputs[0].dtype) != np.int8 or not _per_tensor(op.inputs[0])
            or _only_reader(graph, op.inputs[0]) is not op):
        return None
    return op


def int8_core(model):
    """(core ``Model``, ``SourceEdges``): ``model`` without its input QUANTIZE / NCHW TRANSPOSE and its
    output DEQUANTIZEs. A model without them is returned as is (the same object, trivial edges).

    Input edges are taken only as the first ops, so that op counts of the source and of the core
    differ by ``lead_ops`` up to the first output; output DEQUANTIZEs only when every output has one.
    """
    graph = model.main
    if len(model.subgraphs) != 1 or len(graph.inputs) != 1 or not graph.outputs:
        return model, SourceEdges()
    source = graph.inputs[0]
    image, kinds = source, []
    while (kind := _lead_op(graph, image, len(kinds))) is not None and kind not in kinds:
        kinds.append(kind)
        image = graph.ops[len(kinds) - 1].outputs[0]
    dequantizes = [_output_dequantize(graph, result) for result in graph.outputs]
    if any(op is None for op in dequantizes):
        dequantizes = []
    if not kinds and not dequantizes:
        return model, SourceEdges()
    if len(kinds) + len(dequantizes) == len(graph.ops):
        raise TinyVisionError("the model is only its input and output conversions: nothing to split")
    from converters.planning.metadata import METADATA_NAME

    core = model.copy()
    core.metadata.pop(METADATA_NAME, None)  # an offline plan of the source indexes tensors the core drops
    g = core.main
    dropped = {graph.ops.index(op) for op in dequantizes} | set(range(len(kinds)))
    if kinds:
        g.inputs = [g.ops[len(kinds) - 1].outputs[0]]
    if dequantizes:
        g.outputs = [g.ops[graph.ops.index(op)].inputs[0] for op in dequantizes]
    g.ops = [op for i, op in enumerate(g.ops) if i not in dropped]
    g.prune_tensors()
    image_q = image.quantization
    output_quants = tuple((float(op.inputs[0].quantization.scale.reshape(-1)[0]),
                           int(op.inputs[0].quantization.zero_point.reshape(-1)[0])) for op in dequantizes)
    edges = SourceEdges(
        lead_ops=len(kinds), input_shape=tuple(source.shape), input_dtype=np.dtype(source.dtype).name,
        layout="NCHW" if "TRANSPOSE" in kinds else "NHWC",
        image_quant=(float(image_q.scale.reshape(-1)[0]), int(image_q.zero_point.reshape(-1)[0])) if _per_tensor(
            image) else None,
        output_quants=output_quants or None)
    return core, edges


def random_source_inputs(model, count, seed=0):
    """``count`` random inputs for ``model``'s single input, shape (count, *input shape[1:]): uniform int8,
    or for a float input the dequantized int8 grid of its QUANTIZE plus noise of up to one step (so that
    values between grid points, ties and clamping are all exercised)."""
    rng = np.random.default_rng(seed)
    (x,) = model.main.inputs
    shape = (count, *x.shape[1:])
    if np.dtype(x.dtype) == np.int8:
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    _, edges = int8_core(model)
    scale, zero_point = edges.image_quant if edges.image_quant else (1.0, 0)
    grid = rng.integers(-130, 130, size=shape) - zero_point
    return ((grid + rng.uniform(-1, 1, size=shape)) * scale).astype(np.dtype(x.dtype))
