"""The layer-by-layer memory optimization every conversion gets: operator order, then an offline arena plan.

Before them, rescaling global-average MEANs become the DEPTHWISE_CONV_2Ds of ``converters.passes.board_mean``
(``board_exact_mean``), which the Arduino TFLM libraries compute exactly as tflite-micro does.

The reorder pass minimizes peak live memory; TFLM's greedy planner can still waste
space around the new order (the 4-group bottleneck: 221,184 B instead of 184,320),
so an offline plan written as ``OfflineMemoryAllocation`` metadata pins every
activation where our planner put it. Both rewrites are checked on TFLM (the reference: it
runs models tf.lite.Interpreter refuses): the reordered model bit-exact with the original,
the planned one bit-exact with the reordered one and TFLM's head equal to the plan's. The plan leaves room for the kernel scratch of both the host's
reference kernels and the board's CMSIS-NN kernels (``deployment_scratch``), which
each place only their own: the head on the host is TFLM's, the board's is modelled.
"""
import copy
import dataclasses
from typing import Optional

import numpy as np

from converters.ir import Model
from converters.passes import reorder_model
from converters.passes.board_mean import board_exact_means
from converters.passes.fold_pad import fold_pads
from converters.planning import METADATA_NAME, deployment_heads, deployment_scratch, plan_graph, write_offline_plan
from converters.planning.verify import compare_on_tflm
from tinyvision.analysis.memory import memory_profile
from tinyvision.errors import TinyVisionError


@dataclasses.dataclass(frozen=True)
class OptimizeReport:
    """Bytes: analytic peak live memory before/after reordering; the arena head TFLM's own planner reaches
    and the planned one, on the host (reference kernels; the planned head TFLM-verified) and on the board
    (CMSIS-NN kernel scratch, modelled)."""

    peak_before: int
    peak_after: int
    greedy_head: Optional = None
    planned_head: Optional = None
    board_greedy_head: Optional = None
    board_head: Optional = None
    folded_pads: int = 0  # explicit zero-point PADs folded into SAME convolutions (``fold_pads``)
    board_means: int = 0  # rescaling global MEANs rewritten for the board's library (``board_exact_means``)
    partial: tuple = ()  # ``SplitResult`` of the convolutions run a group of channels at a time

    def lines(self):
        out = [f"explicit PADs folded into SAME convolutions: {self.folded_pads}"] if self.folded_pads else []
        if self.board_means:
            out.append(f"rescaling global-average MEANs rewritten as DEPTHWISE_CONV_2D, which the Arduino TFLM "
                       f"library computes as TFLM does: {self.board_means} (--noboard_exact_mean keeps them)")
        for r in self.partial:
            out.append(f"partial execution: {r.conv_output!r} ({r.channels} channels, into a {r.pool}) runs in "
                       f"{r.parts} channel groups: live memory there {r.peak_before:,} -> {r.peak_after:,} B")
        if self.peak_before is not None:  # None with --noreorder
            out.append(f"operator order: peak live memory {self.peak_before:,} -> {self.peak_after:,} B")
        if self.planned_head is not None:
            out.append(f"offline arena plan: head {self.planned_head:,} B (TFLM's own planner: {self.greedy_head:,} B); "
                       f"on the board, with CMSIS-NN scratch: {self.board_head:,} B ({self.board_greedy_head:,} B)")
        return out


def optimize_tflite(model_bytes, name="model", reorder=True, plan=True, verify=True, board_exact_mean=True,
                    partial_execution=False):
    """Return (optimized .tflite bytes, OptimizeReport).

    partial_execution: run each convolution whose output only a global pool or a strided depthwise reads a
    group of channels at a time when that shrinks the model's arena plan (Pex: ``split_pooled_convolutions``,
    ``split_strided_expansions``; bit-exact). It adds operators, so the patch split, which counts the
    model's own, leaves it off.

    board_exact_mean: rewrite every global-average MEAN that changes quantization, which the Arduino
    libraries' older TFLM rescales through float (1 LSB off at times), into a DEPTHWISE_CONV_2D that both
    compute exactly as TFLM's MEAN (8 B of persistent arena per channel, H x W x C B of flash).

    tflite-support metadata (normalization, labels file, box coding) is carried over: the labels file
    lives in a zip appended after the flatbuffer, which re-exporting through the IR drops.
    The offline plan is only written for single-subgraph models (the Arduino TFLM copies read
    offline plans per subgraph) and only when it beats TFLM's own planner.
    """
    model = Model.from_bytes(model_bytes, name=name)
    # An input's own offline plan is stale once operators move (TFLM would trust it): plan again below.
    model.metadata.pop(METADATA_NAME, None)
    folded = sum(fold_pads(graph) for graph in model.subgraphs)
    means = board_exact_means(model) if board_exact_mean else 0
    split = _partially_executed(model) if partial_execution else ()
    results = reorder_model(model) if reorder else []
    peak_before = results[0].peak_before if results else None
    peak_after = results[0].peak_after if results else None
    # Always re-exported: the IR shares identical constant buffers (tunnels with shared weights).
    reordered = model.to_bytes()
    inputs = _random_inputs(model)
    if verify and not compare_on_tflm(reordered, model_bytes, inputs, name=name).bit_exact:
        raise TinyVisionError(f"internal error: {name}: the rewritten model (PADs folded, MEANs, reordered) differs "
                              "from the original on TFLM; nothing written")
    memory_plan = None
    if plan and len(model.subgraphs) == 1:
        memory_plan = plan_graph(model.main, scratch=deployment_scratch(model.main, name), name=name)
    if memory_plan is None or memory_plan.size >= memory_plan.tflm_greedy_size:
        return _with_metadata_of(model_bytes, reordered), OptimizeReport(
            peak_before, peak_after, folded_pads=folded, board_means=means, partial=split)
    greedy_head = memory_profile(model, name).head_bytes
    board_greedy_head = memory_profile(model, name, kernels="cmsis_nn").head_bytes
    host_head, board_head = deployment_heads(memory_plan, name)
    write_offline_plan(model, memory_plan, name=name)
    planned = model.to_bytes()
    if verify:
        check = compare_on_tflm(planned, reordered, inputs, name=name)
        if check.planned_head != host_head or not check.bit_exact:
            raise TinyVisionError(f"{name}: TFLM did not reproduce the offline plan "
                                  f"(head {check.planned_head} vs {host_head}); nothing written")
    return _with_metadata_of(model_bytes, planned), OptimizeReport(
        peak_before, peak_after, greedy_head, host_head, board_greedy_head, board_head, folded, means, split)


def _partially_executed(model):
    """The ``SplitResult`` of each convolution the Pex passes split in ``model`` (in place), when the split
    model's arena plan is smaller (a whole depthwise may overlap its input in place; channel groups cannot)."""
    from converters.passes import split_pooled_convolutions, split_strided_expansions

    if len(model.subgraphs) != 1:
        return ()
    trial = copy.deepcopy(model)
    results = tuple(r for r in split_pooled_convolutions(trial) + split_strided_expansions(trial) if r.split)
    if not results or plan_graph(trial.main).size >= plan_graph(model.main).size:
        return ()
    model.subgraphs, model.metadata = trial.subgraphs, trial.metadata
    return results


def _with_metadata_of(original, rewritten):
    from converters.quantize import attach_metadata, read_metadata

    meta = read_metadata(original)
    if meta is None:
        return rewritten
    return attach_metadata(rewritten, meta["name"], meta["description"], meta["labels"] or None,
                           meta["normalization"], meta["box_coding"])


def _random_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, t.shape, dtype=np.int8) if t.dtype == np.int8 else
            rng.standard_normal(t.shape).astype(t.dtype) for t in model.main.inputs]
