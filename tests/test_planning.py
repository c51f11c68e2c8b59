"""Offline arena planner: lifetimes, placement, validation, metadata and bundle layout, checked on real TFLM.

TFLM models run in a subprocess (``converters.planning.compare_on_tflm``): each check runs a
planned model next to the same model without a plan, and compares TFLM's reported head with
the plan's size, the outputs bit-exactly with each other and with tf.lite's reference kernels.
"""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import int8_tflite
from converters.ir import Model
from converters.planning import (
    METADATA_NAME,
    Block,
    InPlace,
    align_up,
    allocation_temp_bytes,
    check_arena,
    check_plan,
    compare_on_tflm,
    decode_offline_offsets,
    encode_offline_offsets,
    first_conflict,
    layout_bundle,
    lower_bound,
    pack,
    persistent_span,
    plan_graph,
    read_offline_plan,
    reference_scratch,
    stage_floors,
    tensor_lifetimes,
    write_offline_plan,
)
from converters.planning import greedy
from tinyvision.errors import TinyVisionError


# ---------------------------------------------------------------- models


def _keras():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf, tf.keras.layers


@pytest.fixture(scope="module")
def chain_tflite():
    """conv -> dw -> conv -> conv s2 -> reshape -> dense: every op reads only the previous output."""
    tf, L = _keras()
    x_in = tf.keras.Input((20, 20, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x_in)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = L.Conv2D(16, 1, activation="relu")(x)
    x = L.Conv2D(12, 3, strides=2)(x)
    x = L.Flatten()(x)
    return int8_tflite(tf.keras.Model(x_in, L.Dense(4)(x)))


@pytest.fixture(scope="module")
def residual_tflite():
    """a = conv(x); b = conv(a); add(a, b) is the peak, where writing in place saves one tensor."""
    tf, L = _keras()
    x_in = tf.keras.Input((16, 16, 4))
    a = L.Conv2D(16, 3, padding="same", activation="relu")(x_in)
    b = L.Conv2D(16, 1, activation="relu")(a)
    x = L.Add()([a, b])
    x = L.Conv2D(8, 3, strides=2)(x)
    x = L.GlobalAveragePooling2D()(x)
    return int8_tflite(tf.keras.Model(x_in, L.Dense(3)(x)))


@pytest.fixture(scope="module")
def mean_tflite():
    """MEAN over one axis of a large tensor: its int32 accumulator scratch sits at the peak."""
    tf, L = _keras()
    x_in = tf.keras.Input((16, 16, 2))
    x = L.Conv2D(16, 1)(x_in)
    x = L.Lambda(lambda t: tf.reduce_mean(t, axis=1))(x)
    x = L.Flatten()(x)
    return int8_tflite(tf.keras.Model(x_in, L.Dense(3)(x)))


def reference_outputs(model_bytes, inputs):
    """tf.lite.Interpreter with the reference kernels (the ones TFLM ports)."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=model_bytes,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for x, d in zip(inputs, it.get_input_details()):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


def planned(model_bytes, **kwargs):
    """(plan, planned model bytes) with the host kernels' scratch buffers accounted for."""
    model = Model.from_bytes(model_bytes)
    plan = plan_graph(model.main, scratch=reference_scratch(model.main), **kwargs)
    write_offline_plan(model, plan)
    return plan, model.to_bytes()


def assert_tflm_runs_plan(plan, planned_bytes, original_bytes, seed=0, constrained=False):
    """TFLM's head is the plan's size and (unless ``constrained`` by reserved ranges or pins) no worse
    than its own planner's; outputs bit-exact everywhere."""
    graph = plan.graph
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-128, 128, t.shape, dtype=np.int8) for t in graph.inputs]
    result = compare_on_tflm(planned_bytes, original_bytes, inputs)
    assert result.planned_head == plan.size
    assert result.unplanned_head == plan.tflm_greedy_size  # our model of TFLM's planner is exact
    assert constrained or result.planned_head <= result.unplanned_head
    assert result.bit_exact
    for got, want in zip(result.planned_outputs, reference_outputs(original_bytes, inputs)):
        np.testing.assert_array_equal(got, want)
    return result


def peak_live_bytes(graph):
    """Independent recount: largest sum of aligned sizes of tensors alive in one scope."""
    lifetimes = tensor_lifetimes(graph)
    return max(sum(lt.size for lt in lifetimes if lt.first <= s <= lt.last) for s in range(len(graph.ops) + 1))


# ---------------------------------------------------------------- lifetimes


def test_lifetimes_follow_tflm_scopes(small_cnn_tflite):
    g = Model.from_bytes(small_cnn_tflite).main
    lifetimes = tensor_lifetimes(g)
    conv0, dw, conv1, add, mean, fc = (op.outputs[0] for op in g.ops)
    expected = [(g.inputs[0], 0, 1), (conv0, 1, 4), (dw, 2, 3), (conv1, 3, 4), (add, 4, 5), (mean, 5, 6), (fc, 6, 6)]
    assert [(lt.tensor, lt.first, lt.last) for lt in lifetimes] == expected
    assert [lt.size for lt in lifetimes] == [align_up(t.nbytes) for t, _, _ in expected]
    assert all(lt.size % 16 == 0 for lt in lifetimes)
    assert not any(lt.tensor.is_constant for lt in lifetimes)
    assert [lt.index for lt in lifetimes] == [g.used_tensors().index(t) for t, _, _ in expected]


# ---------------------------------------------------------------- plans on TFLM


def test_chain_reaches_lower_bound_on_tflm(chain_tflite):
    plan, data = planned(chain_tflite)
    assert plan.size == plan.lower_bound == peak_live_bytes(plan.graph)
    assert_tflm_runs_plan(plan, data, chain_tflite)


def test_residual_dag_plan_is_valid_and_not_worse_than_tflm(small_cnn_tflite):
    plan, data = planned(small_cnn_tflite)
    assert plan.lower_bound <= plan.size <= plan.tflm_greedy_size
    assert_tflm_runs_plan(plan, data, small_cnn_tflite, seed=1)


def test_add_writes_in_place_and_stays_bit_exact(residual_tflite):
    plan, data = planned(residual_tflite)
    g = plan.graph
    add_index = next(i for i, op in enumerate(g.ops) if op.opcode == "ADD")
    assert [(p.op_index, p.output) for p in plan.in_place] == [(add_index, g.ops[add_index].outputs[0])]
    pair = plan.in_place[0]
    assert pair.input in g.ops[add_index].inputs
    assert plan.offsets[pair.output] == plan.offsets[pair.input]
    without = plan_graph(g, scratch=reference_scratch(g), in_place=False)
    assert plan.size == plan.lower_bound < without.size == without.lower_bound
    result = assert_tflm_runs_plan(plan, data, residual_tflite, seed=2)
    assert result.planned_head < result.unplanned_head


def test_scratch_buffers_are_planned_where_tflm_puts_them(mean_tflite):
    plan, data = planned(mean_tflite)
    assert [(s.op_index, s.size) for s in plan.scratch] == [(1, 1024), (1, 16), (1, 16)]
    tensors_only = plan_graph(plan.graph)
    assert tensors_only.size < plan.size  # without the scratch buffers the plan would promise too little
    assert_tflm_runs_plan(plan, data, mean_tflite, seed=3)


def test_reserved_range_is_never_used(chain_tflite):
    g = Model.from_bytes(chain_tflite).main
    free = plan_graph(g)
    middle = (free.size // 3 // 16 * 16, free.size // 3 // 16 * 16 + 1000)
    for reserved in ([(0, 1200)], [middle]):
        model = Model.from_bytes(chain_tflite)
        plan = plan_graph(model.main, reserved=reserved)
        start, end = plan.reserved[0]
        assert start <= reserved[0][0] and end >= reserved[0][1]
        for lt in plan.lifetimes:
            offset = plan.offsets[lt.tensor]
            assert offset + lt.size <= start or offset >= end
        assert plan.footprint >= plan.lower_bound
        write_offline_plan(model, plan)
        assert_tflm_runs_plan(plan, model.to_bytes(), chain_tflite, constrained=True)


def test_pinned_input_is_respected(small_cnn_tflite):
    model = Model.from_bytes(small_cnn_tflite)
    x = model.main.inputs[0]
    plan = plan_graph(model.main, pinned={x: 4096})
    assert plan.offsets[x] == 4096
    assert plan.size >= 4096 + align_up(x.nbytes)
    write_offline_plan(model, plan)
    assert_tflm_runs_plan(plan, model.to_bytes(), small_cnn_tflite, seed=4, constrained=True)
    with pytest.raises(TinyVisionError, match="multiple of 16"):
        plan_graph(model.main, pinned={x: 100})


def test_region_too_small_is_an_error(chain_tflite):
    g = Model.from_bytes(chain_tflite).main
    need = plan_graph(g).size
    assert plan_graph(g, region=need).size == need
    with pytest.raises(TinyVisionError, match="no valid arena plan within"):
        plan_graph(g, region=need - 16)


# ---------------------------------------------------------------- validation


def test_check_plan_rejects_bad_plans(small_cnn_tflite):
    model = Model.from_bytes(small_cnn_tflite)
    g = model.main
    plan = plan_graph(g)
    conv0, dw = g.ops[0].outputs[0], g.ops[1].outputs[0]

    def broken(**changes):
        return dataclasses.replace(plan, **changes)

    overlapping = dict(plan.offsets)
    overlapping[conv0] = overlapping[dw] = plan.size  # both above everything else: only they collide
    with pytest.raises(TinyVisionError, match="overlaps") as error:
        check_plan(broken(offsets=overlapping))
    assert conv0.name in str(error.value) and dw.name in str(error.value)

    with pytest.raises(TinyVisionError, match="may not write"):
        check_plan(broken(in_place=[InPlace(1, dw, conv0)]))  # conv0 outlives the depthwise conv (residual)
    with pytest.raises(TinyVisionError, match="reserved range"):
        check_plan(broken(reserved=((plan.offsets[conv0], plan.offsets[conv0] + 16),)))
    with pytest.raises(TinyVisionError, match="pinned"):
        check_plan(broken(pinned={conv0: plan.offsets[conv0] + 16}))
    with pytest.raises(TinyVisionError, match="region"):
        check_plan(broken(region=plan.size - 16))
    misaligned = dict(plan.offsets)
    misaligned[conv0] += 8
    with pytest.raises(TinyVisionError, match="multiple of 16"):
        check_plan(broken(offsets=misaligned))
    missing = dict(plan.offsets)
    del missing[dw]
    with pytest.raises(TinyVisionError, match="no offset"):
        check_plan(broken(offsets=missing))

    with pytest.raises(TinyVisionError, match="overlaps"):
        write_offline_plan(model, broken(offsets=overlapping))
    assert METADATA_NAME not in model.metadata


# ---------------------------------------------------------------- metadata


def test_offline_plan_metadata_round_trip(small_cnn_tflite):
    model = Model.from_bytes(small_cnn_tflite)
    plan = plan_graph(model.main)
    write_offline_plan(model, plan)
    words = np.frombuffer(model.metadata[METADATA_NAME], dtype="<i4")
    tensors = model.main.tensors
    assert list(words[:3]) == [1, 0, len(tensors)]
    assert [int(w) for w in words[3:]] == [plan.offsets.get(t, -1) for t in tensors]
    assert all(words[3 + i] == -1 for i, t in enumerate(tensors) if t.is_constant)

    again = Model.from_bytes(model.to_bytes())
    read = read_offline_plan(again)
    assert {t.name: o for t, o in read.items()} == {t.name: o for t, o in plan.offsets.items()}
    assert read_offline_plan(Model.from_bytes(small_cnn_tflite)) is None

    assert decode_offline_offsets(encode_offline_offsets([0, -1, 48])) == [0, -1, 48]
    with pytest.raises(TinyVisionError, match="announces"):
        decode_offline_offsets(np.asarray([1, 0, 5, 0], dtype="<i4").tobytes())
    with pytest.raises(TinyVisionError, match="version"):
        decode_offline_offsets(np.asarray([2, 0, 0], dtype="<i4").tobytes())


# ---------------------------------------------------------------- bundle layout


def test_bundle_layout(chain_tflite, small_cnn_tflite, residual_tflite):
    # Two "patch" models and a tail: the layout only needs their graphs, not a real split.
    sources = {"patch_a": chain_tflite, "patch_b": small_cnn_tflite, "tail": residual_tflite}
    models = {name: Model.from_bytes(data) for name, data in sources.items()}
    entries = [(name, "tail" if name == "tail" else "patch", m.main) for name, m in models.items()]
    stage_bytes = models["tail"].main.inputs[0].nbytes
    scratch = {name: reference_scratch(m.main) for name, m in models.items()}
    layout = layout_bundle(entries, {"patch_a": 3000, "patch_b": 2001, "tail": 2500}, stage_bytes, scratch=scratch)

    arena = layout.arena
    shared, (stage,) = arena["shared"], arena["stages"]
    assert shared["offset"] == 0 and stage["size"] == stage_bytes
    assert stage["offset"] % 16 == 0 and stage["offset"] + stage_bytes <= shared["size"]
    # resident interpreters are created in the shared region: it holds every model's AllocateTensors temporaries
    creation = max(allocation_temp_bytes(graph) for _, _, graph in entries)
    assert shared["size"] == max([p.footprint for p in layout.plans] + [stage["offset"] + align_up(stage_bytes),
                                                                        creation])
    # the shared region cannot be smaller than the tail alone, nor than any patch plus the stage
    (_, _, a), (_, _, b), (_, _, tail) = entries
    assert shared["size"] >= max(peak_live_bytes(a), peak_live_bytes(b)) + align_up(stage_bytes)
    assert shared["size"] >= plan_graph(tail, scratch=scratch["tail"]).lower_bound  # in-place ADD lowers the peak
    previous_end = shared["size"]
    for i, section in enumerate(arena["persistent"]):
        assert section["model"] == i and section["offset"] % 16 == 0 and section["offset"] >= previous_end
        previous_end = section["offset"] + section["size"]
    assert arena["size"] >= previous_end

    stage_range = (stage["offset"], stage["offset"] + align_up(stage_bytes))
    for (name, role, graph), plan in zip(entries, layout.plans):
        assert plan.graph is graph and plan.region == shared["size"]
        check_plan(plan)
        if role == "tail":
            assert plan.offsets[graph.inputs[0]] == stage["offset"]
        else:
            buffers = [(plan.offsets[lt.tensor], lt.size) for lt in plan.lifetimes]
            buffers += [(s.offset, s.size) for s in plan.scratch]
            assert all(o + size <= stage_range[0] or o >= stage_range[1] for o, size in buffers)

    for name, plan in zip(models, layout.plans):
        write_offline_plan(models[name], plan)
    tail_plan = layout.plans[2]
    result = assert_tflm_runs_plan(tail_plan, models["tail"].to_bytes(), residual_tflite, seed=5, constrained=True)
    assert result.planned_head <= shared["size"]

    with pytest.raises(TinyVisionError, match="stage buffer is"):
        layout_bundle(entries, [0, 0, 0], stage_bytes + 1)
    with pytest.raises(TinyVisionError, match="role"):
        layout_bundle([("x", "head", tail)], [0], stage_bytes)


def test_bundle_layout_two_stages(chain_tflite, small_cnn_tflite, residual_tflite):
    # patch_a fills stage 0; patch_b reads stage 0 and fills stage 1; the tail reads stage 1.
    sources = {"patch_a": chain_tflite, "patch_b": small_cnn_tflite, "tail": residual_tflite}
    entries = [(name, "tail" if name == "tail" else "patch", Model.from_bytes(data).main)
               for name, data in sources.items()]
    stage_bytes = [1000, entries[2][2].inputs[0].nbytes]
    layout = layout_bundle(entries, [3008, 2000, 2512], stage_bytes, interpreters="one_at_a_time",
                           patch_stages={"patch_a": 0, "patch_b": 1})
    arena = layout.arena
    s0, s1 = [(s["offset"], s["offset"] + align_up(s["size"])) for s in arena["stages"]]
    assert [s["size"] for s in arena["stages"]] == stage_bytes
    assert s0[1] <= s1[0] or s1[1] <= s0[0]  # alive together while stage 1 runs
    # each stage above what creating the models run while it holds data writes: stage 0 while patch_a and
    # patch_b are created, stage 1 while patch_b and the tail are
    temps = [allocation_temp_bytes(graph) for _, _, graph in entries]
    assert s0[0] >= max(temps[:2]) and s1[0] >= max(temps[1:])
    assert arena["temp_reserve"] == max(temps)

    def buffers(plan):
        return [(plan.offsets[lt.tensor], plan.offsets[lt.tensor] + lt.size) for lt in plan.lifetimes]

    def clear(ranges, stage):
        return all(end <= stage[0] or start >= stage[1] for start, end in ranges)

    plan_a, plan_b, plan_tail = layout.plans
    assert clear(buffers(plan_a), s0) and clear(buffers(plan_b), s0) and clear(buffers(plan_b), s1)
    assert plan_tail.offsets[entries[2][2].inputs[0]] == s1[0]
    first = arena["stages"][0]
    overlapping = [first, {"offset": first["offset"], "size": min(first["size"], stage_bytes[1])}]
    with pytest.raises(TinyVisionError, match="stages 0 and 1 overlap"):
        check_arena(dict(arena, stages=overlapping), 3)
    with pytest.raises(TinyVisionError, match="stages"):
        layout_bundle(entries, [0, 0, 0], stage_bytes, patch_stages={"patch_a": 2})


def test_stages_packed_from_the_top_leave_the_memory_below_in_one_piece():
    """Stage by stage (k alive with k + 1): each stage as high as it goes under the ceiling, clear of the
    stages alive with it, never under its floor; stage k + 2 takes stage k's place."""
    from converters.planning.bundle import _packed_from_top

    spans, together = [1000, 200, 300, 100], {(0, 1), (1, 2), (2, 3)}
    offsets = _packed_from_top(spans, 2000, [0, 0, 0, 0], together)
    assert offsets == (1000, 800, 1700, 1600)
    assert _packed_from_top(spans, 1100, [0, 0, 0, 0], together)[:2] == (100, 0)
    assert _packed_from_top(spans, 1100, [0, 50, 0, 0], together)[1] == 50  # under its floor: raised to it


def _gap_cost(spans, heads):
    """A stand-in for planning a phase's models: stage k's models need heads[k] bytes in one piece beside the
    buffers of stages k - 1 and k, in the largest gap below their ends or else above them."""
    def cost(k, offsets):
        if heads[k] is None:
            raise TinyVisionError("does not fit")
        taken = sorted((offsets[j], offsets[j] + spans[j]) for j in (k - 1, k) if j >= 0)
        gap, at = 0, 0
        for lo, hi in taken:
            gap, at = max(gap, lo - at), max(at, hi)
        return at if gap >= heads[k] else at + heads[k]
    return cost


def test_stage_search_reaches_the_best_layout_of_a_small_chain():
    """The DP over stage offsets meets the brute-force optimum of a small chain (every aligned offset
    tried), keeps floors and keeps stages alive together apart."""
    import itertools

    from converters.planning.stage_search import search_stage_offsets

    spans, floors, heads = [64, 32, 48, 32], [16, 0, 32, 0], [96, 80, 112, 48]
    cost = _gap_cost(spans, heads)

    def need(offsets):
        return max(cost(k, offsets[:k + 1]) for k in range(len(spans)))

    def valid(offsets):
        return (all(o >= f for o, f in zip(offsets, floors))
                and all(a + spans[k] <= b or b + spans[k + 1] <= a
                        for k, (a, b) in enumerate(zip(offsets, offsets[1:]))))

    grid = range(0, 256, 16)
    best = min(need(o) for o in itertools.product(grid, repeat=len(spans)) if valid(o))
    lower = max(spans[k] + spans[k - 1] * (k > 0) + heads[k] for k in range(len(spans)))
    found = search_stage_offsets(spans, floors, [96, 0, 0, 0], lower, cost)
    assert found and all(valid(o) for o in found)
    assert need(found[0]) == best and [need(o) for o in found] == sorted(need(o) for o in found)
    # a stage whose models fit nowhere leaves no layout
    assert search_stage_offsets(spans, floors, [0] * 4, lower, _gap_cost(spans, [96, None, 112, 48])) == []


def test_bundle_layout_one_interpreter_at_a_time(chain_tflite, small_cnn_tflite, residual_tflite):
    sources = {"patch_a": chain_tflite, "patch_b": small_cnn_tflite, "tail": residual_tflite}
    entries = [(name, "tail" if name == "tail" else "patch", Model.from_bytes(data).main)
               for name, data in sources.items()]
    stage_bytes = entries[2][2].inputs[0].nbytes
    persistent = [3008, 2000, 2512]
    arena = layout_bundle(entries, persistent, stage_bytes, interpreters="one_at_a_time").arena

    shared_end = arena["shared"]["size"]
    assert arena["interpreters"] == "one_at_a_time"
    assert [s["offset"] for s in arena["persistent"]] == [shared_end] * 3  # one slot, reused
    assert [s["size"] for s in arena["persistent"]] == persistent
    assert arena["size"] == shared_end + max(persistent) and persistent_span(arena) == max(persistent)
    reserve = max(allocation_temp_bytes(graph) for _, _, graph in entries)
    assert arena["temp_reserve"] == reserve and arena["stages"][0]["offset"] >= reserve

    resident = layout_bundle(entries, persistent, stage_bytes).arena
    assert persistent_span(resident) == sum(persistent)
    with pytest.raises(TinyVisionError, match="overlap"):
        check_arena(dict(resident, persistent=arena["persistent"], size=arena["size"]), 3)
    one_stage = [(graph, {0}) for _, role, graph in entries]  # every model runs while stage 0 holds data
    assert stage_floors(one_stage, 1, "one_at_a_time") == [reserve] and stage_floors(one_stage, 1, "resident") == [0]
    with pytest.raises(TinyVisionError, match="interpreters"):
        layout_bundle(entries, persistent, stage_bytes, interpreters="lazy")


# ---------------------------------------------------------------- packing properties (random lifetimes)


def _blocks(draw, max_blocks=24, max_scope=16):
    count = draw(st.integers(1, max_blocks))
    blocks = []
    for _ in range(count):
        first = draw(st.integers(-1, max_scope))
        last = first + draw(st.integers(0, 6))
        blocks.append(Block(16 * draw(st.integers(1, 40)), first, last))
    return blocks


@st.composite
def lifetime_sets(draw):
    return _blocks(draw)


@st.composite
def chains(draw):
    sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=30))
    return [Block(16 * s, i, i + 1) for i, s in enumerate(sizes)]


@st.composite
def constrained_sets(draw):
    blocks = _blocks(draw, max_blocks=16)
    pinned = draw(st.sets(st.integers(0, len(blocks) - 1), max_size=2))
    # pins 4 KiB apart, so pinned blocks (at most 640 bytes) never collide with each other
    blocks = [dataclasses.replace(b, pin=4096 * (i + 1)) if i in pinned else b for i, b in enumerate(blocks)]
    start = 16 * draw(st.integers(0, 64))
    reserved = [(start, start + 16 * draw(st.integers(1, 32)))]
    reserved = [] if any(b.pin is not None and b.pin < reserved[0][1] and reserved[0][0] < b.pin + b.size
                         for b in blocks) else reserved
    scratch = [Block(16 * draw(st.integers(1, 8)), s, s, online=True)
               for s in draw(st.lists(st.integers(0, 16), max_size=3))]
    return blocks + scratch, reserved


def _tflm_greedy(blocks):
    return greedy.plan([greedy.Request(b.size, b.first, b.last) for b in blocks])[1]


@settings(max_examples=150, deadline=None)
@given(lifetime_sets())
def test_random_lifetimes_always_give_valid_plans(blocks):
    packing = pack(blocks, effort=20)
    assert first_conflict(blocks, packing.offsets) is None
    assert all(o % 16 == 0 for o in packing.offsets)
    assert packing.lower_bound == lower_bound(blocks) <= packing.size <= _tflm_greedy(blocks)


@settings(max_examples=150, deadline=None)
@given(chains())
def test_random_chains_reach_the_lower_bound(blocks):
    packing = pack(blocks, effort=0)
    assert first_conflict(blocks, packing.offsets) is None
    assert packing.size == packing.lower_bound


@settings(max_examples=100, deadline=None)
@given(constrained_sets())
def test_random_constraints_are_respected(case):
    blocks, reserved = case
    try:
        packing = pack(blocks, reserved, effort=10)
    except ValueError:
        # TFLM places scratch buffers without knowing reserved ranges: then no plan is valid,
        # and the packer must say so rather than return one
        assert reserved and any(b.online for b in blocks)
        return
    assert first_conflict(blocks, packing.offsets, reserved) is None
    for b, offset in zip(blocks, packing.offsets):
        assert b.pin is None or offset == b.pin
    # online blocks sit exactly where TFLM's greedy planner puts them around the offline ones
    requests = [greedy.Request(b.size, b.first, b.last, None if b.online else o)
                for b, o in zip(blocks, packing.offsets)]
    assert list(greedy.plan(requests)[0]) == list(packing.offsets)
