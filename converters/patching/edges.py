"""The int8 NHWC core of a model people export, and what the runtime does at its edges instead.

Exporters wrap the int8 network in ops that are no part of it:

* a float input quantized by a leading QUANTIZE (MCUNet / TinyEngine models, float I/O);
* an NCHW input turned into NHWC by a leading TRANSPOSE with perm (0, 2, 3, 1) (PyTorch exports);
* a float output made by a trailing DEQUANTIZE.

Patch splitting works on the core between them. The bundle's image is the core's int8 NHWC
input: on the device the image sources produce it directly (camera pixels -> int8), so a float
window (4x the bytes) never enters the arena. On the host, ``SourceEdges`` turns the source
model's own inputs into that image (TFLM's QUANTIZE rounding, the transpose) and the tail's
int8 output back into the source's output (TFLM's DEQUANTIZE arithmetic), bit for bit.

Op counts (``n`` of a stage) stay those of the model being split, edges included, so the op
indices ``analyze`` prints for it are the ones a ``--patches`` chain names: ``lead_ops`` converts.
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
    output_quant: (scale, zero point) the tail's int8 output is dequantized with, None when the
    source's output is the core's.
    """

    lead_ops: int = 0
    input_shape: tuple = None
    input_dtype: str = "int8"
    layout: str = "NHWC"
    image_quant: tuple = None
    output_quant: tuple = None

    @property
    def trivial(self):
        return self.lead_ops == 0 and self.output_quant is None

    def plan(self):
        """The optional ``input`` / ``output`` entries of the plan's ``source`` (docs/bundle-format.md)."""
        if self.trivial:
            return {}
        entries = {}
        if self.lead_ops:
            entries["input"] = {"shape": list(self.input_shape), "dtype": self.input_dtype, "layout": self.layout}
        if self.output_quant is not None:
            entries["output"] = {"dtype": "float32", "scale": self.output_quant[0], "zero_point": self.output_quant[1]}
        return entries

    @classmethod
    def from_plan(cls, plan):
        """The edges a plan records (trivial when its source has no ``input`` / ``output`` entries)."""
        source, image = plan.get("source", {}), plan["image"]
        given, output = source.get("input"), source.get("output")
        edges = cls(image_quant=(float(image["scale"]), int(image["zero_point"])))
        if given is not None:
            lead = int(given["dtype"] != "int8") + int(given["layout"] == "NCHW")
            edges = dataclasses.replace(edges, lead_ops=lead, input_shape=tuple(given["shape"]),
                                        input_dtype=given["dtype"], layout=given["layout"])
        if output is not None:
            edges = dataclasses.replace(edges, output_quant=(float(output["scale"]), int(output["zero_point"])))
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
        """The tail's int8 outputs -> the source model's outputs."""
        if self.output_quant is None:
            return tail_outputs
        return dequantize_like_tflm(tail_outputs, *self.output_quant)


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


def int8_core(model):
    """(core ``Model``, ``SourceEdges``): ``model`` without its input QUANTIZE / NCHW TRANSPOSE and its
    output DEQUANTIZE. A model without them is returned as is (the same object, trivial edges).

    Only edges that are the first ops (input side) or the last op (output side) are taken, so that
    op counts of the source and of the core differ by ``lead_ops`` exactly.
    """
    graph = model.main
    if len(model.subgraphs) != 1 or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return model, SourceEdges()
    source = graph.inputs[0]
    image, kinds = source, []
    while (kind := _lead_op(graph, image, len(kinds))) is not None and kind not in kinds:
        kinds.append(kind)
        image = graph.ops[len(kinds) - 1].outputs[0]
    last, output_quant = graph.ops[-1] if graph.ops else None, None
    result = graph.outputs[0]
    if (last is not None and last.opcode == "DEQUANTIZE" and last.outputs[0] is result
            and np.dtype(result.dtype) == np.float32 and np.dtype(last.inputs[0].dtype) == np.int8
            and _per_tensor(last.inputs[0]) and _only_reader(graph, last.inputs[0]) is last):
        q = last.inputs[0].quantization
        output_quant = (float(q.scale.reshape(-1)[0]), int(q.zero_point.reshape(-1)[0]))
    if not kinds and output_quant is None:
        return model, SourceEdges()
    if len(kinds) == len(graph.ops) - (output_quant is not None):
        raise TinyVisionError("the model is only its input and output conversions: nothing to split")
    from converters.planning.metadata import METADATA_NAME

    core = model.copy()
    core.metadata.pop(METADATA_NAME, None)  # an offline plan of the source indexes tensors the core drops
    g = core.main
    end = len(g.ops) - (output_quant is not None)
    g.inputs = [g.ops[len(kinds) - 1].outputs[0]] if kinds else g.inputs
    g.outputs = [g.ops[-1].inputs[0]] if output_quant is not None else g.outputs
    g.ops = g.ops[len(kinds):end]
    g.prune_tensors()
    image_q = image.quantization
    edges = SourceEdges(
        lead_ops=len(kinds), input_shape=tuple(source.shape), input_dtype=np.dtype(source.dtype).name,
        layout="NCHW" if "TRANSPOSE" in kinds else "NHWC",
        image_quant=(float(image_q.scale.reshape(-1)[0]), int(image_q.zero_point.reshape(-1)[0])) if _per_tensor(
            image) else None,
        output_quant=output_quant)
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
