"""TFLM's ``OfflineMemoryAllocation`` model metadata: write a checked plan into a model, read it back.

Format (TFLM docs/memory_management.md, read by AllocationInfoBuilder::GetOfflinePlannedOffsets):
a buffer of little-endian int32 ``[version=1, subgraph=0, n, offset_0 .. offset_{n-1}]`` with one
entry per tensor of the subgraph in the file's tensor order, -1 for tensors TFLM should place
itself (constants, variables, and anything the plan leaves online). TFLM ignores the first two
words (the doc calls the second "number of subgraphs"; TFLM's own tests write 0) and requires
``n`` to equal the model's total tensor count.
"""
import numpy as np

from converters.planning.check import check_plan
from tinyvision.errors import TinyVisionError

METADATA_NAME = "OfflineMemoryAllocation"
FORMAT_VERSION = 1
ONLINE = -1


def encode_offline_offsets(offsets):
    """int32 words for the metadata buffer: header then one offset (or -1) per tensor."""
    offsets = [int(o) for o in offsets]
    if any(o < ONLINE for o in offsets):
        raise TinyVisionError(f"offline offsets must be >= 0 or {ONLINE}")
    return np.asarray([FORMAT_VERSION, 0, len(offsets)] + offsets, dtype="<i4").tobytes()


def decode_offline_offsets(data, name="model"):
    """The per-tensor offsets of an ``OfflineMemoryAllocation`` buffer (list of int, -1 = online)."""
    if len(data) < 12 or len(data) % 4:
        raise TinyVisionError(f"{name}: {METADATA_NAME} metadata is {len(data)} bytes, not a header plus int32s")
    words = np.frombuffer(data, dtype="<i4")
    version, _, count = (int(w) for w in words[:3])
    if version != FORMAT_VERSION:
        raise TinyVisionError(f"{name}: {METADATA_NAME} version {version} is not {FORMAT_VERSION}")
    if count != len(words) - 3:
        raise TinyVisionError(f"{name}: {METADATA_NAME} announces {count} offsets but holds {len(words) - 3}")
    return [int(w) for w in words[3:]]


def write_offline_plan(model, plan, name="model"):
    """Check ``plan`` and store it in ``model.metadata`` (replacing any earlier plan).

    model: a single-subgraph ``converters.ir.Model`` whose main graph is ``plan.graph``; its tensor
    list is pruned to the exported order first, so the offsets index the file's tensors. Apply this
    last: any later change to the graph's tensors invalidates the plan.
    """
    if len(model.subgraphs) != 1:
        raise TinyVisionError(f"{name}: offline plans are written for single-subgraph models only")
    graph = model.main
    if plan.graph is not graph:
        raise TinyVisionError(f"{name}: the plan was made for another graph")
    check_plan(plan, name=name)
    graph.prune_tensors()
    model.metadata[METADATA_NAME] = encode_offline_offsets(plan.offline_offsets())
    return model


def read_offline_plan(model, name="model"):
    """{Tensor: offset} of the offline-planned tensors of ``model.main``, or None without a plan."""
    data = model.metadata.get(METADATA_NAME)
    if data is None:
        return None
    offsets = decode_offline_offsets(data, name)
    tensors = model.main.tensors
    total = sum(len(g.tensors) for g in model.subgraphs)
    if len(offsets) != total:
        raise TinyVisionError(f"{name}: {METADATA_NAME} has {len(offsets)} offsets for {total} tensors")
    return {t: o for t, o in zip(tensors, offsets) if o != ONLINE}
