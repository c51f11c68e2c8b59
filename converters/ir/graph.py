"""The graph IR: tensors, operators, subgraphs and models as plain Python objects.

A ``Graph`` lists its operators in execution order; tensors are shared objects,
so an edge is simply the same ``Tensor`` appearing as one op's output and
another op's input. Passes rewrite these objects and ``converters.ir.tflite``
turns them back into a flatbuffer.
"""
import copy
import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Quantization:
    """Affine int quantization: real = scale * (q - zero_point), per tensor or along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self):
        return self.scale.size > 1


@dataclasses.dataclass(eq=False)
class Tensor:
    """A tensor: an activation (``data is None``) or a constant with its values.

    ``shape_signature`` keeps the converter's -1 entries for dynamic dimensions.
    Identity matters (``eq=False``): two tensors with equal fields are still
    two different edges of the graph.
    """

    name: str
    shape: tuple
    dtype: np.dtype
    data: Optional[np.ndarray] = None
    quantization: Optional[Quantization] = None
    shape_signature: Optional[tuple] = None
    is_variable: bool = False

    @property
    def is_constant(self):
        return self.data is not None

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def is_dynamic(self):
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)

    def __repr__(self):
        kind = "const" if self.is_constant else "act"
        return f"Tensor({self.name!r}, {self.shape}, {np.dtype(self.dtype).name}, {kind})"


@dataclasses.dataclass(eq=False)
class Op:
    """One operator. ``inputs`` may hold ``None`` for omitted optional inputs.

    ``options`` is the schema's ``*OptionsT`` object for builtin ops (or None).
    """

    opcode: str
    inputs: list
    outputs: list
    options: object = None
    version: int = 1
    custom_code: Optional[str] = None
    custom_options: Optional[bytes] = None
    options2: object = None

    def __repr__(self):
        ins = ", ".join(t.name if t is not None else "-" for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"Op({self.opcode}: [{ins}] -> [{outs}])"

    @property
    def activation_inputs(self):
        return [t for t in self.inputs if t is not None and not t.is_constant]


@dataclasses.dataclass(eq=False)
class Graph:
    """A subgraph: operators in execution order and the tensors they use.

    ``tensors`` fixes the exported tensor order (offline memory plans index it);
    tensors that no op, input or output references are dropped on export.
    """

    ops: list
    inputs: list
    outputs: list
    tensors: list
    name: str = ""

    def producers(self):
        """Map each produced tensor to the op that writes it."""
        return {t: op for op in self.ops for t in op.outputs}

    def consumers(self):
        """Map each tensor to the ops that read it, in execution order."""
        readers = {}
        for op in self.ops:
            for t in op.inputs:
                if t is not None:
                    readers.setdefault(t, []).append(op)
        return readers

    def used_tensors(self):
        """Tensors referenced by the graph, in ``tensors`` order then first use."""
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(t for t in op.inputs if t is not None)
            used.update(op.outputs)
        ordered = [t for t in self.tensors if t in used]
        listed = set(ordered)
        extra = []
        for t in self.inputs + [t for op in self.ops for t in op.inputs + op.outputs] + self.outputs:
            if t is not None and t not in listed:
                listed.add(t)
                extra.append(t)
        return ordered + extra

    def prune_tensors(self):
        """Make ``tensors`` exactly the exported list, so indices into it are the file's indices."""
        self.tensors = self.used_tensors()
        return self

    def tensor_index(self, tensor):
        return self.tensors.index(tensor)

    def activation_tensors(self):
        """Non-constant tensors in export order: what TFLM plans into the arena."""
        return [t for t in self.used_tensors() if not t.is_constant]


@dataclasses.dataclass(eq=False)
class SignatureDef:
    key: str
    subgraph_index: int
    inputs: list  # (name, Tensor)
    outputs: list  # (name, Tensor)


@dataclasses.dataclass(eq=False)
class Model:
    """A TFLite model: subgraphs (the first runs), named metadata buffers, signatures."""

    subgraphs: list
    metadata: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    signature_defs: list = dataclasses.field(default_factory=list)
    # serialize tensor names shortened (``tflite.short_name``): flash of derived models, whose long
    # converter-fused names would otherwise be repeated in every patch model of a bundle
    short_tensor_names: bool = False

    @property
    def main(self):
        return self.subgraphs[0]

    @classmethod
    def from_bytes(cls, data, name="model"):
        from converters.ir import tflite

        return tflite.import_model(data, name)

    @classmethod
    def load(cls, path):
        from tinyvision.fileio import read_tflite_bytes

        return cls.from_bytes(read_tflite_bytes(path), name=str(path))

    def to_bytes(self):
        from converters.ir import tflite

        return tflite.export_model(self)

    def copy(self):
        """A deep copy whose constant arrays are shared (they are never mutated in place)."""
        memo = {}
        for graph in self.subgraphs:
            for t in graph.used_tensors():
                if t.data is not None:
                    memo[id(t.data)] = t.data
        return copy.deepcopy(self, memo)
