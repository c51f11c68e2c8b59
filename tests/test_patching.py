"""Patch-based inference: stage split, tunnel split, bundle I/O and the host PatchRunner on real TFLM.

Every bit-exactness check runs the bundle and the unsplit model on TFLM (``verify_bundle``, one subprocess).
"""
import copy
import dataclasses
import json
import os

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from conftest import int8_tflite
from converters.export.flash_image import image_size
from converters.ir import Model
from converters.patching import (grid_tiles, max_stage_ops, read_bundle, split_patch_stage, split_points,
                                 split_stages, split_tunnels, stage_tensor, validate, write_bundle)
from converters.patching.bundle import finalize
from converters.patching.channels import ChannelGroups
from converters.patching import search as search_module
from converters.patching.search import search
from tinyvision.errors import TinyVisionError
from tinyvision.runtime.patch_runner import verify_bundle


def _keras():
    import tensorflow as tf

    return tf, tf.keras.layers


def assert_bit_exact(bundle, model_bytes, n_inputs=3, seed=0):
    """The bundle (a Bundle or a folder) on TFLM: its stage buffers and outputs equal the source model's
    on TFLM (``verify_bundle``)."""
    result = verify_bundle(bundle, model_bytes, n_inputs=n_inputs, seed=seed)
    assert result.ok, result.detail
    return result


def _op_index(model_bytes, name_part):
    ops = Model.from_bytes(model_bytes).main.ops
    return next(i for i, op in enumerate(ops) if name_part in op.outputs[0].name)


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 0.35 on 64x64, 10 classes, int8.

    No softmax: with random weights the logits' scale is ~1e-8, a multiplier TFLM's int8 SOFTMAX aborts on.
    """
    tf, _ = _keras()
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None, classes=10,
                                              classifier_activation=None)
    return int8_tflite(model, samples=4)


# ---------------------------------------------------------------- geometry


def test_receptive_field_windows(small_cnn_tflite):
    # conv 3x3 s2 SAME (24 -> 12, pads 0 before / 1 after) -> dw 3x3 SAME -> 1x1 -> add(skip): stage 12x12x8
    n = max_stage_ops(small_cnn_tflite)
    assert n == 4 and stage_tensor(small_cnn_tflite, n).shape == (1, 12, 12, 8)
    bundle = split_patch_stage(small_cnn_tflite, n, 2)
    windows = [(p.window.y, p.window.h, p.window.x, p.window.w) for p in bundle.patches]
    # tile rows [0, 6): dw reads conv rows [-1, 7) -> [0, 7); conv reads image rows [0, 15)
    # tile rows [6, 12): dw reads [5, 13) -> [5, 12); conv reads [10, 25) -> [10, 24)
    assert windows == [(0, 15, 0, 15), (0, 15, 10, 14), (10, 14, 0, 15), (10, 14, 10, 14)]
    assert [(p.output.y, p.output.x, p.output.h, p.output.w) for p in bundle.patches] == [
        (0, 0, 6, 6), (0, 6, 6, 6), (6, 0, 6, 6), (6, 6, 6, 6)]
    assert_bit_exact(bundle, small_cnn_tflite)


def test_grid_tiles_put_the_remainder_at_the_borders():
    tiles, rows, cols = grid_tiles((1, 18, 7, 4), (4, [3, 4]))
    assert (rows, cols) == (4, 2)
    assert sorted({(y0, y1) for y0, y1, _, _ in tiles}) == [(0, 5), (5, 9), (9, 13), (13, 18)]
    assert sorted({(x0, x1) for _, _, x0, x1 in tiles}) == [(0, 3), (3, 7)]
    with pytest.raises(TinyVisionError, match="do not add up"):
        grid_tiles((1, 18, 7, 4), ([9, 8], 2))
    with pytest.raises(TinyVisionError, match="into 9 tiles"):
        grid_tiles((1, 18, 7, 4), (2, 9))


# ---------------------------------------------------------------- MobileNetV2


@pytest.mark.parametrize("grid", [2, 3])
def test_mobilenet_v2_patch_stage_is_bit_exact(mobilenet, grid):
    n = _op_index(mobilenet, "block_2_add") + 1  # stage 16x16x8 after three blocks
    bundle = split_patch_stage(mobilenet, n, grid)
    assert bundle.last_stage["shape"] == [16, 16, 8]
    assert len(bundle.patches) == grid * grid and len(bundle.models) == grid * grid + 1
    assert bundle.stats["mac_overhead"] > 0
    assert bundle.stats["flash_bytes"] == image_size([m.data for m in bundle.models])
    assert_bit_exact(bundle, mobilenet, n_inputs=2)


def test_patch_models_run_the_strided_expansion_a_group_of_channels_at_a_time(mobilenet):
    """Block 1's expansion feeds a stride-2 depthwise: each patch runs it in channel groups (Pex) unless
    ``partial_expansions=False``. Both bundles are bit-exact; the grouped one needs less memory per patch."""
    from converters.passes import peak_live_bytes

    n = _op_index(mobilenet, "block_2_add") + 1
    grouped = split_patch_stage(mobilenet, n, 2, partial_expansions=True)
    whole = split_patch_stage(mobilenet, n, 2)
    for bundle, concatenations in ((grouped, True), (whole, False)):
        opcodes = {op.opcode for m in bundle.models[:bundle.tail] for op in m.graph().ops}
        assert ("CONCATENATION" in opcodes) == concatenations
    for g, w in zip(grouped.models[:grouped.tail], whole.models[:whole.tail]):
        assert peak_live_bytes(g.graph()) < peak_live_bytes(w.graph())
    assert grouped.stats["macs"] == whole.stats["macs"]
    assert_bit_exact(grouped, mobilenet, n_inputs=2)
    assert_bit_exact(whole, mobilenet, n_inputs=1)


def test_interior_patches_share_one_model(mobilenet):
    n = _op_index(mobilenet, "block_2_add") + 1
    bundle = split_patch_stage(mobilenet, n, 4)
    assert len(bundle.patches) == 16 and len(bundle.models) == 9 + 1  # 4 corners, 4 edges, 1 interior, tail
    interior = [p.model for k, p in enumerate(bundle.patches) if k in (5, 6, 9, 10)]
    assert len(set(interior)) == 1 and bundle.models[interior[0]].name == "patch_middle_center"
    # the variants share their weights in the flash image, but each model's own tables are flash
    baseline = bundle.stats["baseline"]
    assert bundle.stats["flash_bytes"] > baseline["flash_bytes"] and bundle.stats["macs"] > baseline["macs"]


def test_chained_stages_are_bit_exact(mobilenet):
    # stage 0: stem and blocks 0-1 over the image (16x16x8); stage 1: block 2 over stage 0 (16x16x8);
    # stage 2: blocks 3-5 over stage 1 (8x8x16); the tail runs the rest
    cuts = [_op_index(mobilenet, name) + 1 for name in ("block_1_project/", "block_2_add", "block_5_add")]
    bundle = split_stages(mobilenet, [(cuts[0], 3), (cuts[1], 2), (cuts[2], (2, 1))])
    assert [s["shape"] for s in bundle.stages] == [[16, 16, 8], [16, 16, 8], [8, 8, 16]]
    assert [p.stage for p in bundle.patches] == [0] * 9 + [1] * 4 + [2] * 2
    for p in bundle.patches:  # later stages read windows of the stage before, never the image
        source = bundle.source_of(p)["shape"]
        assert p.window.y + p.window.h <= source[0] and p.window.x + p.window.w <= source[1]
    assert all(bundle.models[p.model].name.startswith(f"stage{p.stage}_") for p in bundle.patches if p.stage)
    single = split_patch_stage(mobilenet, cuts[0], 3)
    assert bundle.stats["macs"] > single.stats["macs"] > bundle.stats["baseline"]["macs"]
    result = assert_bit_exact(finalize(bundle), mobilenet, n_inputs=2)
    assert result.stage_mismatches == 0
    validate(bundle)
    with pytest.raises(TinyVisionError, match="must increase"):
        split_stages(mobilenet, [(cuts[1], 2), (cuts[0], 2)])


def test_chain_arena_keeps_live_stages_apart(mobilenet):
    cuts = [_op_index(mobilenet, name) + 1 for name in ("block_1_project/", "block_2_add")]
    bundle = finalize(split_stages(mobilenet, [(cuts[0], 2), (cuts[1], 2)]))
    (a, b) = [(s["offset"], s["offset"] + s["size"]) for s in bundle.arena["stages"]]
    assert a[1] <= b[0] or b[1] <= a[0]
    bad = copy.deepcopy(bundle)
    bad.patches[-1].stage = 0  # a stage-1 patch's model made a stage-0 one: it serves two stages
    with pytest.raises(TinyVisionError, match="serves stage 1 from stage 0 and stage 0 from the image|never read"):
        validate(bad)
    swapped = copy.deepcopy(bundle)  # stage 1 read before stage 0 is complete: a half fill
    first_reader = next(i for i, p in enumerate(swapped.patches) if p.stage == 1)
    swapped.patches.insert(first_reader - 1, swapped.patches.pop(first_reader))
    with pytest.raises(TinyVisionError, match="patch outputs of stage 0 cover"):
        validate(swapped)


def test_segments_run_in_place_on_the_stage_buffers(mobilenet):
    """A 1x1 stage (a segment of the tail) reads the whole previous stage and fills its own: its input and
    output tensors are planned on those buffers, so nothing is copied and the shared region holds each buffer
    once. The same bundle planned with copies needs more."""
    from converters.ir import Model
    from converters.planning import layout_bundle, read_offline_plan

    cuts = [_op_index(mobilenet, name) + 1 for name in ("block_1_project/", "block_2_add", "block_5_add")]
    bundle = finalize(split_stages(mobilenet, [(cuts[0], 2), (cuts[1], 1), (cuts[2], 1)]),
                      interpreters="one_at_a_time")
    segments = [p.model for p in bundle.patches if p.stage > 0]
    assert bundle.arena["in_place"] == segments == bundle.whole_stage_models()
    stages = bundle.arena["stages"]
    for p in bundle.patches[-2:]:
        graph = bundle.models[p.model].graph()
        offsets = read_offline_plan(bundle.models[p.model].model())
        assert offsets[graph.inputs[0]] == stages[p.stage - 1]["offset"]
        assert offsets[graph.outputs[0]] == stages[p.stage]["offset"]
    assert assert_bit_exact(bundle, mobilenet, n_inputs=2).stage_mismatches == 0
    validate(bundle)

    graphs = [Model.from_bytes(m.data).main for m in bundle.models]
    with_copies = layout_bundle([(m.name, m.role, g) for m, g in zip(bundle.models, graphs)],
                                [m.persistent_bytes for m in bundle.models], bundle.stage_bytes,
                                interpreters="one_at_a_time",
                                patch_stages={bundle.models[p.model].name: p.stage for p in bundle.patches})
    assert bundle.arena["shared"]["size"] < with_copies.arena["shared"]["size"]
    with pytest.raises(TinyVisionError, match="must be a patch model reading a stage buffer"):
        layout_bundle([(m.name, m.role, g) for m, g in zip(bundle.models, graphs)],
                      [m.persistent_bytes for m in bundle.models], bundle.stage_bytes,
                      patch_stages={bundle.models[p.model].name: p.stage for p in bundle.patches},
                      in_place=[bundle.models[bundle.patches[0].model].name])


@pytest.mark.parametrize("interpreters", ["resident", "one_at_a_time"])
def test_board_scratch_stays_out_of_the_stages(mobilenet, interpreters):
    """TFLM places kernel scratch itself, first-fit around the planned tensors, blind to the stage buffers,
    and the board's CMSIS-NN kernels request buffers the host's reference kernels do not (the stem's
    im2col). Seen on a Cortex-M4 build of Chirale's TFLM when bundles were planned for the host's scratch
    only: that buffer written over the first bytes of stage 0. Every patch model's board placement
    (its offline offsets, the board's scratch placed like TFLM) keeps out of the stages it works with."""
    from tinyvision.analysis import memory_profile

    cuts = [_op_index(mobilenet, name) + 1 for name in ("block_1_project/", "block_2_add", "block_5_add")]
    bundle = finalize(split_stages(mobilenet, [(cuts[0], 2), (cuts[1], 2), (cuts[2], 2)]),
                      interpreters=interpreters)
    base = bundle.arena["shared"]["offset"]
    stages = [(s["offset"] - base, s["offset"] - base + s["size"]) for s in bundle.arena["stages"]]
    checked = 0
    for p in bundle.patches:
        m = bundle.models[p.model]
        for b in memory_profile(m.data, m.name, kernels="cmsis_nn").buffers:
            for k in (p.stage - 1, p.stage):
                if k >= 0:
                    start, end = stages[k]
                    assert b.offset + b.size <= start or b.offset >= end, (m.name, b.name, b.offset, stages[k])
            checked += b.kind == "scratch"
    assert checked > 0  # the board's scratch was there to check


@pytest.fixture(scope="module")
def grown_search(mobilenet):
    """The default search (chains grown up to 3 stages) within 50% extra MACs."""
    return search(mobilenet, 0.5)


def test_search_chains_stages_when_the_tail_sets_the_peak(mobilenet, grown_search):
    result = grown_search
    single = min(c.shared for c in result.candidates if len(c.stages) == 1)
    chained = [c for c in result.pareto if len(c.stages) > 1]
    assert chained and min(c.shared for c in chained) < single
    for c in result.pareto:
        assert c.persistent > 0 and c.total == c.shared + c.persistent
    # a chain whose last stage runs the last convolution's channel groups as their own models
    assert any(isinstance(p, ChannelGroups) for c in result.candidates for _, p in c.stages)
    smallest = min(chained, key=lambda c: c.shared)
    bundle = finalize(split_stages(mobilenet, smallest.stages))
    assert bundle.arena["shared"]["size"] <= smallest.shared + 1024  # the layout is near the estimate
    assert verify_bundle(bundle, mobilenet, n_inputs=1).ok


def _step(a, b, need, macs, section=100, pair=0, temp=0, instructions=0.0):
    return search_module._Step(a, b, None if b is None else 2, need, pair, temp, section, macs, instructions)


def test_deep_paths_keep_every_chain_not_dominated_within_the_bound():
    """The DP over cuts: a chain is kept when no other within the shared bound beats it in persistent,
    MACs, instructions, stage buffers and temporaries together; with one interpreter at a time the largest
    stage buffers plus the largest temporaries must fit the bound as well."""
    steps = [_step(0, 1, need=900, macs=10), _step(0, 2, need=500, macs=30),
             _step(1, 3, need=400, macs=5), _step(2, 3, need=300, macs=5),
             _step(3, None, need=200, macs=1, section=80), _step(1, None, need=2000, macs=1, section=50),
             _step(2, None, need=450, macs=1, section=300, temp=350, pair=0)]
    paths = search_module._deep_paths
    assert paths(steps, 100, True) == []
    # within 500 B: over cut 2, its tail after it (fewer MACs) or on to cut 3 (less persistent)
    assert sorted(paths(steps, 500, False)) == [((2, 2),), ((2, 2), (3, 2))]
    # within 1000 B the chain over cut 1 beats both in MACs, persistent and temporaries together
    assert paths(steps, 1000, False) == [((1, 2), (3, 2))]
    # one at a time, the 350 B temporaries of the tail after cut 2 lie over its 500 B stage buffers
    steps[1] = _step(0, 2, need=500, macs=30, pair=500)
    assert ((2, 2),) not in paths(steps, 800, True) and ((2, 2),) in paths(steps, 850, True)
    # of two equal steps the one with less persistent is kept
    dominated = paths([_step(0, 1, 100, 10, section=60), _step(0, 1, 100, 10, section=70),
                       _step(1, None, 100, 1, section=10)], 100, False)
    assert dominated == [((1, 2),)]


def test_deep_search_finds_deeper_chains_of_less_sram(mobilenet, grown_search):
    """``search(deep=True)``: besides the grown chains, every stage between block boundaries within the MAC
    budget, chained by the DP. Its smallest-SRAM chain is deeper than the grown search's 3 tiled stages and
    needs less; built, its layout is near the estimate, and it is bit-exact on TFLM."""
    def tiled(c):
        return sum(not isinstance(p, ChannelGroups) and p != 1 for _, p in c.stages)

    deep = search(mobilenet, 0.5, deep=True)
    assert {c.stages for c in grown_search.candidates} <= {c.stages for c in deep.candidates}
    deeper = [c for c in deep.candidates if tiled(c) > 3]
    assert deeper and all(c.mac_overhead <= 0.5 for c in deeper)
    assert deep.best.sram < grown_search.best.sram and tiled(deep.best) > 3
    bundle = finalize(split_stages(mobilenet, deep.best.stages), interpreters="one_at_a_time")
    assert bundle.arena["size"] <= deep.best.total + 1024
    assert verify_bundle(bundle, mobilenet, n_inputs=1).ok


def test_channel_stage_runs_each_group_of_the_last_convolution_as_its_own_model(mobilenet):
    """MobileNetV2's 1280-channel last convolution and its global pool as a channel stage: one model per group of
    output channels, each filling its channel range of the pooled buffer. No model holds every channel's
    requantization data any more, so the persistent slot (one interpreter at a time) shrinks; bit-exact."""
    from converters.cli.bundle_convert import _chain
    from converters.patching.channels import default_groups, next_pooled_convolution

    model = Model.from_bytes(mobilenet)
    last = _op_index(mobilenet, "Conv_1/")  # CONV_2D 2x2x112 -> 2x2x1280, then MEAN -> (1, 1280)
    assert default_groups(model, last) is not None and default_groups(model, last - 1) is None
    assert next_pooled_convolution(model, 0) == (last, default_groups(model, last))
    first = (_op_index(mobilenet, "block_1_project/") + 1, 2)
    chain = [first, (last, 1), (last + 2, ChannelGroups(4))]
    assert _chain(f"{first[0]}:2x2,{last}:1x1,{last + 2}:c4") == chain
    bundle = finalize(split_stages(mobilenet, chain), interpreters="one_at_a_time")
    pooled = [p for p in bundle.patches if p.stage == 2]
    assert bundle.stages[2]["shape"] == [1, 1, 1280] and len(pooled) == 4
    assert [(p.output.c, p.output.channels) for p in pooled] == [(0, 320), (320, 320), (640, 320), (960, 320)]
    assert all(dataclasses.astuple(p.window) == (0, 0, 2, 2) for p in pooled)
    assert all(len(bundle.models[p.model].graph().ops) == 2 for p in pooled)
    validate(bundle)
    assert assert_bit_exact(bundle, mobilenet, n_inputs=2).stage_mismatches == 0

    whole_tail = finalize(split_stages(mobilenet, chain[:2]), interpreters="one_at_a_time")
    assert len(whole_tail.models[whole_tail.tail].graph().ops) > 3  # the tail ran it in slices, all in one model
    groups_and_tail = {p.model for p in pooled} | {bundle.tail}
    largest = max(bundle.models[i].persistent_bytes for i in groups_and_tail)
    assert largest < whole_tail.models[whole_tail.tail].persistent_bytes / 2

    for bad, why in (([first, (last + 1, ChannelGroups(4))], "a channel stage runs a CONV_2D"),
                     ([first, (last, 1), (last + 2, ChannelGroups(1))], "needs 2 to 1280 groups")):
        with pytest.raises(TinyVisionError, match=why):
            split_stages(mobilenet, bad)


def test_verify_bundle_reports_bit_exactness(mobilenet):
    n = _op_index(mobilenet, "block_1_project/") + 1  # stage 16x16x8
    bundle = split_patch_stage(mobilenet, n, 2)
    result = verify_bundle(bundle, mobilenet, n_inputs=2)
    assert result.ok, result.detail
    assert result.stage_mismatches == result.output_mismatches == 0
    assert "bit-exact with the source model on TFLM on 2 random inputs" in result.detail
    patch = bundle.models[bundle.patches[0].model]
    model = Model.from_bytes(patch.data)
    bias = next(op.inputs[2] for op in model.main.ops if op.opcode == "CONV_2D")
    bias.data = bias.data + 1000  # a wrong patch model must be caught in the stage buffer
    patch.data, patch.parsed = model.to_bytes(), None
    wrong = verify_bundle(bundle, mobilenet, n_inputs=1)
    assert not wrong.ok and wrong.stage_mismatches > 0 and "NOT exact" in wrong.detail


def test_unsupported_op_and_bad_cut_are_named(mobilenet):
    ops = Model.from_bytes(mobilenet).main.ops
    mean = next(i for i, op in enumerate(ops) if op.opcode == "MEAN")
    assert max_stage_ops(mobilenet) == mean == split_points(mobilenet)[-1]
    with pytest.raises(TinyVisionError, match=rf"op {mean} \(MEAN\) cannot be in the patch stage.*n={mean}"):
        split_patch_stage(mobilenet, mean + 1, 2)
    add = _op_index(mobilenet, "block_2_add")
    with pytest.raises(TinyVisionError, match="reads 2 tensors"):
        split_patch_stage(mobilenet, add, 2)  # the residual's skip and branch both cross
    assert add not in split_points(mobilenet) and add + 1 in split_points(mobilenet)


# ---------------------------------------------------------------- random CNNs

_LAYER = st.one_of(
    st.tuples(st.just("conv"), st.sampled_from([4, 8]), st.sampled_from([1, 3, 5, 7]), st.sampled_from([1, 2]),
              st.sampled_from(["same", "valid"]), st.sampled_from([None, "relu", "relu6"])),
    st.tuples(st.just("dw"), st.sampled_from([3, 5]), st.sampled_from([1, 2]), st.sampled_from(["same", "valid"])),
    st.tuples(st.just("residual"), st.sampled_from([1, 3, 5])),
    st.tuples(st.just("maxpool"), st.sampled_from([2, 3]), st.sampled_from([1, 2]), st.sampled_from(["same", "valid"])),
    st.tuples(st.just("avgpool"), st.sampled_from([2, 3]), st.sampled_from([1, 2])),
    st.tuples(st.just("dilated"), st.sampled_from(["same", "valid"])),
    st.tuples(st.just("zeropad"), st.sampled_from([((1, 0), (0, 2)), ((1, 1), (1, 1))])),
    st.tuples(st.just("hardswish")),
)


def _out(size, k, s, padding):
    return -(-size // s) if padding == "same" else (size - k) // s + 1


def build_random_cnn(size, channels, specs, seed):
    """A Keras CNN from layer specs (a spec is skipped when it would shrink the image below 4x4) + GAP + Dense."""
    tf, L = _keras()
    tf.keras.utils.set_random_seed(seed)
    x_in = tf.keras.Input((*size, channels))
    x, (h, w) = x_in, size
    for spec in specs:
        kind = spec[0]
        if kind == "conv":
            _, filters, k, s, padding, act = spec
            shape = (_out(h, k, s, padding), _out(w, k, s, padding))
            layer = L.Conv2D(filters, k, strides=s, padding=padding, activation=act)
        elif kind == "dw":
            _, k, s, padding = spec
            shape = (_out(h, k, s, padding), _out(w, k, s, padding))
            layer = L.DepthwiseConv2D(k, strides=s, padding=padding, activation="relu6")
        elif kind == "maxpool":
            _, k, s, padding = spec
            shape = (_out(h, k, s, padding), _out(w, k, s, padding))
            layer = L.MaxPooling2D(k, s, padding=padding)
        elif kind == "avgpool":
            _, k, s = spec
            shape = (_out(h, k, s, "valid"), _out(w, k, s, "valid"))
            layer = L.AveragePooling2D(k, s)
        elif kind == "dilated":
            shape = (h, w) if spec[1] == "same" else (h - 4, w - 4)
            layer = L.Conv2D(6, 3, dilation_rate=2, padding=spec[1])
        elif kind == "zeropad":
            (t, b), (left, r) = spec[1]
            shape = (h + t + b, w + left + r)
            layer = L.ZeroPadding2D(spec[1])
        else:
            shape = (h, w)
        if min(shape) < 4:
            continue
        if kind == "residual":
            branch = L.Conv2D(x.shape[-1], spec[1], padding="same", activation="relu")(x)
            x = L.Add()([x, L.Conv2D(x.shape[-1], 1)(branch)])
        elif kind == "hardswish":
            x = L.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) / 6.0)(x)
        else:
            x = layer(x)
        h, w = shape
    x = L.GlobalAveragePooling2D()(x)
    return tf.keras.Model(x_in, L.Dense(3)(x))


# no shrinking: every example converts a model (seconds); a failure prints its example as drawn
@settings(max_examples=10, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(size=st.sampled_from([(23, 29), (17, 21), (19, 16)]), channels=st.sampled_from([1, 3]),
       specs=st.lists(_LAYER, min_size=2, max_size=5), grid=st.sampled_from([2, 3, (2, 3), (3, 1)]),
       seed=st.integers(0, 99))
@example(size=(23, 29), channels=1, specs=[("dilated", "same"), ("conv", 4, 1, 1, "same", None)], grid=2, seed=0)
def test_random_cnns_are_bit_exact(size, channels, specs, grid, seed):
    model_bytes = int8_tflite(build_random_cnn(size, channels, specs, seed), samples=4)
    n = max_stage_ops(model_bytes)
    stage = stage_tensor(model_bytes, n).shape
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    bundle = split_patch_stage(model_bytes, n, (min(rows, stage[1]), min(cols, stage[2])))
    assert_bit_exact(bundle, model_bytes, n_inputs=2, seed=seed)
    # the same stage as a second one, after an earlier cut whose tail can still be cut at n
    # (not every cut can: a tensor from before the earlier cut may be read past n)
    earlier = [cut for cut in split_points(model_bytes)
               if cut < n and n - cut in split_points(split_patch_stage(model_bytes, cut, 1).models[-1].data)]
    if earlier:
        first = stage_tensor(model_bytes, earlier[-1]).shape
        chain = [(earlier[-1], (min(2, first[1]), min(2, first[2]))), (n, (min(rows, stage[1]), min(cols, stage[2])))]
        assert_bit_exact(split_stages(model_bytes, chain), model_bytes, n_inputs=2, seed=seed)


def test_uneven_tiles_and_dilation_are_bit_exact():
    tf, L = _keras()
    tf.keras.utils.set_random_seed(3)
    x_in = tf.keras.Input((23, 29, 3))
    x = L.Conv2D(8, 5, strides=2, padding="same", activation="relu")(x_in)  # 12 x 15
    x = L.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu")(x)  # SPACE_TO_BATCH_ND chain
    x = L.MaxPooling2D(3, 1, padding="same")(x)
    x = L.DepthwiseConv2D(3, padding="valid")(x)  # 10 x 13
    model_bytes = int8_tflite(tf.keras.Model(x_in, L.Dense(4)(L.GlobalAveragePooling2D()(x))), samples=4)
    n = max_stage_ops(model_bytes)
    assert "SPACE_TO_BATCH_ND" in [op.opcode for op in Model.from_bytes(model_bytes).main.ops[:n]]
    bundle = split_patch_stage(model_bytes, n, ([3, 7], [2, 6, 5]))
    assert [(p.output.h, p.output.w) for p in bundle.patches] == [(3, 2), (3, 6), (3, 5), (7, 2), (7, 6), (7, 5)]
    assert_bit_exact(bundle, model_bytes)


# ---------------------------------------------------------------- model errors


def test_models_that_cannot_be_split(tmp_path, small_cnn_tflite):
    tf, L = _keras()
    x_in = tf.keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, padding="same")(x_in)
    nine_outputs = int8_tflite(tf.keras.Model(x_in, [L.Dense(k + 1)(L.Flatten()(x)) for k in range(9)]))
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(x_in, L.GlobalAveragePooling2D()(x)))
    float_model = converter.convert()
    model = Model.from_bytes(small_cnn_tflite)
    model.main.inputs[0].shape_signature = (1, -1, -1, 3)
    dynamic = model.to_bytes()
    for data, message in [(nine_outputs, "has 9 outputs: a bundle's tail makes 1 to 8"), (float_model, "not an int8 model"), (dynamic, "dynamic shape")]:
        with pytest.raises(TinyVisionError, match=message):
            split_patch_stage(data, 1, 2)
        with pytest.raises(TinyVisionError, match=message):
            split_tunnels(data)
    assert not os.listdir(tmp_path)
    with pytest.raises(TinyVisionError, match="out of range"):
        split_patch_stage(small_cnn_tflite, 99, 2)
    with pytest.raises(TinyVisionError, match="into 13 tiles"):
        split_patch_stage(small_cnn_tflite, 4, 13)
    with pytest.raises(TinyVisionError, match="not a tunnel model"):
        split_tunnels(small_cnn_tflite)


# ---------------------------------------------------------------- tunnels


def _tunnel_model(size=32, patch=16, filters=8):
    """Cropping2D per patch -> shared conv tunnel -> GlobalAveragePooling -> Concatenate -> Dense."""
    tf, L = _keras()
    tf.keras.utils.set_random_seed(1)
    x_in = tf.keras.Input((size, size, 3))
    stem = L.Conv2D(filters, 3, strides=2, padding="same", activation="relu")
    dw = L.DepthwiseConv2D(3, padding="same", activation="relu6")
    pooled = []
    for y, x in [(0, 0), (0, size - patch), (size - patch, 0), (size - patch, size - patch)]:
        crop = L.Cropping2D(((y, size - y - patch), (x, size - x - patch)))(x_in)
        pooled.append(L.GlobalAveragePooling2D()(dw(stem(crop))))
    return int8_tflite(tf.keras.Model(x_in, L.Dense(5)(L.Concatenate()(pooled))), samples=4)


def test_tunnel_split_is_bit_exact():
    model_bytes = _tunnel_model()
    bundle = split_tunnels(model_bytes)
    assert bundle.kind == "tunnels" and bundle.last_stage["shape"] == [1, 1, 32]
    assert [(p.window.x, p.window.y, p.window.w, p.window.h) for p in bundle.patches] == [
        (0, 0, 16, 16), (16, 0, 16, 16), (0, 16, 16, 16), (16, 16, 16, 16)]
    assert [p.output.c for p in bundle.patches] == [0, 8, 16, 24]
    assert bundle.stats["mac_overhead"] == 0
    assert_bit_exact(bundle, model_bytes)


def test_identical_tunnels_share_one_model():
    """Give every tunnel tunnel 0's constants and activation quantization: one model runs all four."""
    model = Model.from_bytes(_tunnel_model())
    graph = model.main
    slices = [op for op in graph.ops if op.opcode == "STRIDED_SLICE"]
    chains = []
    for sl in slices:
        chain, t = [], sl.outputs[0]
        while True:
            op = next(op for op in graph.ops if t in op.inputs)
            if op.opcode == "CONCATENATION":
                break
            chain.append(op)
            t = op.outputs[0]
        chains.append(chain)
    for chain in chains[1:]:
        for op, first in zip(chain, chains[0]):
            op.inputs[1:] = first.inputs[1:]
            op.outputs[0].quantization = first.outputs[0].quantization
    model_bytes = model.to_bytes()
    bundle = split_tunnels(model_bytes)
    assert [p.model for p in bundle.patches] == [0, 0, 0, 0] and len(bundle.models) == 2
    assert_bit_exact(bundle, model_bytes)


def test_tinyvision_tunnel_layers_split_bit_exact():
    layers = pytest.importorskip("tinyvision.layers")
    tf, L = _keras()
    tf.keras.utils.set_random_seed(2)
    x_in = tf.keras.Input((40, 40, 3))
    patches = layers.InputSegmentation(grid=(2, 2), overlap=4, center_patch=True)(x_in)
    merged = layers.PatchTunnel(blocks=[dict(filters=8, expansion=2, stride=2, groups=2)], stem_filters=8)(patches)
    model_bytes = int8_tflite(tf.keras.Model(x_in, L.Dense(4)(merged)), samples=4)
    bundle = split_tunnels(model_bytes)
    assert len(bundle.patches) == 5 and bundle.last_stage["shape"] == [1, 1, 40]
    assert (bundle.patches[-1].window.x, bundle.patches[-1].window.y) == (9, 9)  # the centre patch
    assert_bit_exact(bundle, model_bytes, n_inputs=2)


# ---------------------------------------------------------------- bundle folder


def test_bundle_folder_round_trip(tmp_path, small_cnn_tflite):
    bundle = split_patch_stage(small_cnn_tflite, 4, 2, name="small.tflite")
    folder = write_bundle(bundle, tmp_path / "bundle")
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # no temporary folder left behind
    plan = json.loads((tmp_path / "bundle" / "plan.json").read_text())
    assert plan["format"] == "tinyvision.bundle/2" and plan["kind"] == "patch_stage"
    assert sorted(os.listdir(folder)) == sorted(["plan.json"] + [m["file"] for m in plan["models"]])
    arena = plan["arena"]
    (stage,) = arena["stages"]
    assert arena["shared"]["offset"] <= stage["offset"]
    assert stage["offset"] + stage["size"] <= arena["shared"]["size"]
    assert all(m["nonpersistent_bytes"] > 0 and m["persistent_bytes"] > 0 for m in plan["models"])
    if arena.get("offline_plans"):
        assert all("OfflineMemoryAllocation" in Model.from_bytes(m.data).metadata for m in bundle.models)

    again = read_bundle(folder)
    assert again.plan() == plan
    assert_bit_exact(folder, small_cnn_tflite, n_inputs=2)  # the planned models, read back from disk

    write_bundle(split_patch_stage(small_cnn_tflite, 4, 3), folder)  # replaces the old bundle
    assert len(read_bundle(folder).patches) == 9 and sorted(os.listdir(tmp_path)) == ["bundle"]

    plan = json.loads((tmp_path / "bundle" / "plan.json").read_text())
    plan["patches"][0]["window"]["x"] = 20
    (tmp_path / "bundle" / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(TinyVisionError, match="not inside the 24x24 image"):
        read_bundle(folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(TinyVisionError, match="not a bundle"):
        write_bundle(bundle, other)
    assert os.listdir(other) == ["keep.txt"]
