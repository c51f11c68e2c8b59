"""Instructions of int8 models and bundles on the Nano 33 BLE's Cortex-M4F, estimated.

The board's TFLM library (Chirale_TensorFlowLite: TFLM with CMSIS-NN kernels) spends, per operator
of one Invoke, instructions roughly linear in a few sizes of the op, with coefficients that depend on
the kernel CMSIS-NN picks (a 1x1 convolution, a 3x3 depthwise convolution and a general one differ
by several times per MAC). ``op_features`` gives those sizes, ``op_kind`` the kernel; the
coefficients per kind, and those of creating an interpreter (construction and AllocateTensors: per
op, per tensor, per channel of per-channel requantization) and of the runtime's copies per byte,
are fitted by ``benchmarks/latency_model.py`` on the emulated Cortex-M4F's per-operator profile
(``tinyvision.runtime.board``, ``profile=True``) and shipped in ``cortex_m4_instructions.json``.

MACs alone mislead for patches: a patch runs every op of its stage on a small tile, where the per-op
and per-row costs of the kernels, the halo's extra MACs and re-creating interpreters add up. The
patch search (``converters.patching.search``) uses ``bundle_instructions`` to keep a chosen bundle
within a latency budget; ``benchmarks/latency.py`` prints the estimate beside the emulator's count.
"""
import functools
import json
import math
import os

import numpy as np

from tinyvision.analysis.cost import op_macs

COSTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cortex_m4_instructions.json")
FEATURES = ("macs", "output_elements", "input_elements", "output_rows", "calls")
CREATION_FEATURES = ("models", "ops", "tensors", "channels")
ANY_KIND = "*"  # coefficients fitted over every op: for kinds the profile never met


def op_kind(op):
    """The kernel an op runs on: its opcode, with CONV_2D and DEPTHWISE_CONV_2D told apart by kernel size."""
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1 and op.inputs[1] is not None:
        _, kh, kw, _ = op.inputs[1].shape
        return f"{op.opcode} {kh}x{kw}" if (kh, kw) in ((1, 1), (3, 3)) else op.opcode
    return op.opcode


def op_features(op):
    """The sizes an op's instructions grow with, in ``FEATURES`` order: MACs (``tinyvision.analysis.cost``),
    output and activation-input elements, output rows (batch x height: kernels loop per row) and 1."""
    out = op.outputs[0] if op.outputs else None
    shape = tuple(out.shape) if out is not None else ()
    rows = math.prod(shape[:-2]) if len(shape) >= 3 else 1
    inputs = sum(int(t.size) for t in op.activation_inputs)
    return np.array([op_macs(op), out.size if out is not None else 0, inputs, rows, 1], dtype=np.float64)


def creation_features(graph):
    """Sizes of creating one interpreter for ``graph``, in ``CREATION_FEATURES`` order: 1, ops, tensors and
    the channels of per-channel quantized weights (each gets a requantization multiplier and shift)."""
    channels = sum(int(np.size(t.quantization.scale)) for t in graph.tensors
                   if t.is_constant and t.quantization is not None and t.quantization.scale is not None
                   and np.size(t.quantization.scale) > 1)
    return np.array([1, len(graph.ops), len(graph.tensors), channels], dtype=np.float64)


class InstructionModel:
    """Fitted coefficients: ``ops`` {kind: coefficients over FEATURES}, ``creation`` (over CREATION_FEATURES)
    and ``copy_per_byte`` (the runtime copying a patch's window in and its output out)."""

    def __init__(self, ops, creation, copy_per_byte):
        self.ops = {kind: np.asarray(c, dtype=np.float64) for kind, c in ops.items()}
        self.creation = np.asarray(creation, dtype=np.float64)
        self.copy_per_byte = float(copy_per_byte)

    @classmethod
    def load(cls, path=COSTS_FILE):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data["ops"], data["creation"], data["copy_per_byte"])

    def to_json(self):
        return {"ops": {kind: [round(float(v), 4) for v in c] for kind, c in sorted(self.ops.items())},
                "creation": [round(float(v), 4) for v in self.creation], "copy_per_byte": round(self.copy_per_byte, 4)}

    def op(self, op):
        """Instructions of one Invoke of ``op``."""
        return float(self.ops.get(op_kind(op), self.ops[ANY_KIND]) @ op_features(op))

    def invoke(self, graph):
        """Instructions of one Invoke of a model's main ``graph``."""
        return sum(self.op(op) for op in graph.ops)

    def create(self, graph):
        """Instructions of creating an interpreter for ``graph`` (construction and AllocateTensors)."""
        return float(self.creation @ creation_features(graph))


@functools.lru_cache(maxsize=1)
def default_model():
    """The shipped ``InstructionModel`` (``cortex_m4_instructions.json``)."""
    return InstructionModel.load()


def copied_bytes(graph):
    """Bytes the runtime copies around one run of a patch model that does not run in place: its window in,
    its output out."""
    return graph.inputs[0].nbytes + graph.outputs[0].nbytes


def bundle_instructions(bundle, costs=None, interpreters=None, in_place=None):
    """{"stage k": ..., "tail": ..., "creation": ..., "inference": ...}: estimated instructions of one inference
    of ``bundle`` (a ``tinyvision.bundle`` Bundle) as tflm_app's PatchRunner runs it, creation included in
    each part. A whole model (no stages) is created once at setup: its inference is its Invoke alone.
    interpreters / in_place: the arena's (its ``interpreters`` and ``in_place`` models, whose windows and
    outputs are not copied), for a bundle not laid out yet."""
    costs = costs or default_model()
    graphs = [m.graph() for m in bundle.models]
    arena = bundle.arena or {}
    one_at_a_time = (interpreters or arena.get("interpreters", "one_at_a_time")) == "one_at_a_time"
    in_place = set(arena.get("in_place", []) if in_place is None else in_place)
    out, creation, previous = {}, 0.0, bundle.tail if bundle.stages else None
    invokes = {}  # per model: a stage runs most of its models many times
    for k in range(len(bundle.stages)):
        runs = [p for p in bundle.patches if p.stage == k]
        if one_at_a_time:  # as ``converters.patching.bundle.finalize`` orders them: each model created once
            runs.sort(key=lambda p: p.model)
        part = 0.0
        for p in runs:
            graph = graphs[p.model]
            if p.model not in invokes:
                invokes[p.model] = costs.invoke(graph)
            part += invokes[p.model]
            if p.model not in in_place:
                part += costs.copy_per_byte * copied_bytes(graph)
            if one_at_a_time and p.model != previous:
                made = costs.create(graph)
                part, creation, previous = part + made, creation + made, p.model
        out[f"stage {k}"] = part
    tail = costs.invoke(graphs[bundle.tail])
    if one_at_a_time and previous is not None and previous != bundle.tail:
        made = costs.create(graphs[bundle.tail])
        tail, creation = tail + made, creation + made
    out["tail"] = tail
    out["creation"] = creation
    out["inference"] = sum(v for k, v in out.items() if k.startswith("stage")) + tail
    return out
