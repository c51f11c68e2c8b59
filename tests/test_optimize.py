"""The default layer-by-layer optimization of `convert`: reorder + offline plan, metadata kept, and partial
execution of the unsplit model."""
import numpy as np

from converters.ir import Model
from converters.optimize import optimize_tflite
from converters.planning import METADATA_NAME, read_offline_plan
from converters.quantize import attach_metadata, read_metadata
from tinyvision.runtime import tflm
from test_channel_split import bottlenecks_tflite  # noqa: F401  (fixture)
from test_reorder import grouped_block_tflite  # noqa: F401  (fixture)


def test_grouped_block_reaches_group_by_group_peak_on_tflm(grouped_block_tflite):
    optimized, report = optimize_tflite(grouped_block_tflite, "block")
    assert report.peak_after < report.peak_before
    assert report.planned_head is not None and report.planned_head <= 190_000
    assert read_offline_plan(Model.from_bytes(optimized)) is not None
    stock = tflm.measure(grouped_block_tflite).head_bytes
    planned = tflm.measure(optimized).head_bytes
    assert planned == report.planned_head and planned < stock
    assert report.planned_head <= report.board_head and report.board_head < report.board_greedy_head
    x = np.random.default_rng(3).integers(-128, 128, (1, 48, 48, 16), dtype=np.int8)
    np.testing.assert_array_equal(tflm.run(optimized, [x])[0], tflm.run_reference(grouped_block_tflite, [x])[0])


def test_metadata_and_labels_survive(small_cnn_tflite):
    labelled = attach_metadata(small_cnn_tflite, "small", labels=list("abcde"))
    optimized, _ = optimize_tflite(labelled, "small")
    meta = read_metadata(optimized)
    assert meta["labels"] == list("abcde")
    assert meta["normalization"] == read_metadata(labelled)["normalization"]


def test_an_already_planned_model_is_planned_again(grouped_block_tflite):
    """Converting a converted model: its own offline plan is dropped, not carried into the reordered bytes,
    and TFLM's own planner is measured without it."""
    once, first = optimize_tflite(grouped_block_tflite, "block")
    twice, second = optimize_tflite(once, "block")
    assert second.greedy_head == first.greedy_head and second.planned_head == first.planned_head
    assert Model.from_bytes(twice).metadata[METADATA_NAME] == Model.from_bytes(once).metadata[METADATA_NAME]
    _, unplanned = optimize_tflite(once, "block", plan=False)
    assert unplanned.planned_head is None


def test_without_reordering_the_report_still_prints(grouped_block_tflite):
    """`convert --noreorder`: no peak figures to report, the plan still is."""
    _, report = optimize_tflite(grouped_block_tflite, "block", reorder=False)
    lines = report.lines()
    assert not any(line.startswith("operator order") for line in lines)
    assert any(line.startswith("offline arena plan") for line in lines)


def test_partial_execution_lowers_the_unsplit_head_bit_exact(bottlenecks_tflite):
    """`convert` without --patches runs the stride-2 expansion a group of channels at a time: TFLM's head
    drops, its outputs do not change, and the report says which convolution was split."""
    whole, plain = optimize_tflite(bottlenecks_tflite, "bottlenecks")
    split, report = optimize_tflite(bottlenecks_tflite, "bottlenecks", partial_execution=True)
    assert plain.partial == () and [(r.pool, r.parts) for r in report.partial] == [("DEPTHWISE_CONV_2D", 4)]
    assert any(line.startswith("partial execution: ") and "4 channel groups" in line for line in report.lines())
    assert tflm.measure(split).head_bytes < tflm.measure(whole).head_bytes
    x = np.random.default_rng(4).integers(-128, 128, (1, 16, 16, 8), dtype=np.int8)
    np.testing.assert_array_equal(tflm.run(split, [x])[0], tflm.run(bottlenecks_tflite, [x])[0])
