"""Memory-optimal operator order: the grouped-expansion block, random DAGs, MobileNetV2."""
import itertools
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import int8_tflite, reference_outputs
from converters.ir import Graph, Model, Op, Tensor
from converters.passes import live_bytes_per_op, peak_live_bytes, reorder_graph, reorder_tflite
from tinyvision.errors import TinyVisionError

GROUPS = 4


@pytest.fixture(scope="module")
def grouped_block_tflite():
    """48x48x16 -> t=6 expansion (96 ch) split into 4 groups of 24: expand+ReLU6, dw3x3+ReLU6, project to 16;
    the partial projections summed by ADDs, then the residual."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    x_in = tf.keras.Input((48, 48, 16))
    parts = []
    for _ in range(GROUPS):
        e = L.ReLU(6.0)(L.Conv2D(24, 1)(x_in))
        d = L.ReLU(6.0)(L.DepthwiseConv2D(3, padding="same")(e))
        parts.append(L.Conv2D(16, 1)(d))
    total = parts[0]
    for p in parts[1:]:
        total = L.Add()([total, p])
    out = L.Add()([total, x_in])
    return int8_tflite(tf.keras.Model(x_in, out), samples=4)


def groups_of(graph):
    """Each group as its (expand, depthwise, project) ops, found by following the edges from the input."""
    consumers = graph.consumers()
    groups = []
    for expand in consumers[graph.inputs[0]]:
        if expand.opcode != "CONV_2D":
            continue
        (dw,) = consumers[expand.outputs[0]]
        (project,) = consumers[dw.outputs[0]]
        groups.append((expand, dw, project))
    return groups


def test_grouped_block_is_scheduled_group_by_group(grouped_block_tflite):
    before = Model.from_bytes(grouped_block_tflite).main
    groups = groups_of(before)
    assert len(groups) == GROUPS
    # The converter runs every expansion before any depthwise: all four 55,296-byte expansions live at once.
    assert {op for op in before.ops[:GROUPS]} == {g[0] for g in groups}

    data, (result,) = reorder_tflite(grouped_block_tflite)
    after = Model.from_bytes(data).main
    assert result.changed and result.exact
    assert result.peak_before == peak_live_bytes(before)
    assert result.peak_after == peak_live_bytes(after) < result.peak_before
    # Optimum: input + running sum + one group's expanded and depthwise tensors = 2*36,864 + 2*55,296.
    assert result.peak_after <= 190_000
    position = {op.outputs[0].name: i for i, op in enumerate(after.ops)}
    for expand, dw, project in groups:
        e, d, p = (position[op.outputs[0].name] for op in (expand, dw, project))
        assert d == e + 1 and p == d + 1  # each group runs to completion

    x = np.random.default_rng(0).integers(-128, 128, (1, 48, 48, 16), dtype=np.int8)
    for a, b in zip(reference_outputs(grouped_block_tflite, x), reference_outputs(data, x)):
        np.testing.assert_array_equal(a, b)


def test_grouped_block_on_tflm(grouped_block_tflite):
    from converters.planning.metadata import write_offline_plan
    from converters.planning.planner import plan_graph
    from tinyvision.runtime import tflm

    data, (result,) = reorder_tflite(grouped_block_tflite)
    before, after = tflm.measure(grouped_block_tflite), tflm.measure(data)
    # The analytic peak is a lower bound of what any planner needs.
    assert before.head_bytes >= result.peak_before and after.head_bytes >= result.peak_after
    # TFLM's own greedy planner places the 55,296-byte tensors first, at two fixed offsets, so the
    # running sum cannot share their space and the head ends one 36,864-byte slot above the optimum.
    assert after.head_bytes < before.head_bytes
    assert after.head_bytes <= result.peak_after + 36_864
    # With an offline plan of the new order TFLM reaches the analytic optimum ...
    planned = Model.from_bytes(data)
    write_offline_plan(planned, plan_graph(planned.main, overlap=False))
    planned = planned.to_bytes()
    assert result.peak_after <= tflm.measure(planned).head_bytes <= 190_000
    # ... and goes below it once depthwise outputs overlap their dying input.
    overlapped = Model.from_bytes(data)
    write_offline_plan(overlapped, plan_graph(overlapped.main))
    overlapped = overlapped.to_bytes()
    assert tflm.measure(overlapped).head_bytes < result.peak_after

    x = np.random.default_rng(1).integers(-128, 128, (1, 48, 48, 16), dtype=np.int8)
    expected = tflm.run(grouped_block_tflite, [x])
    for model in (data, planned, overlapped):
        for a, b in zip(expected, tflm.run(model, [x])):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # the int8 conversion takes 20-40 s on a shared CPU; the pass itself well under a second
def test_mobilenet_v2_is_fast_and_never_worse():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    keras_model = tf.keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    data = int8_tflite(keras_model, samples=2)
    start = time.perf_counter()
    out, (result,) = reorder_tflite(data)
    assert time.perf_counter() - start < 3.0
    assert result.peak_after <= result.peak_before == peak_live_bytes(Model.from_bytes(data).main)
    assert result.segments > 30  # the blocks are separated by single-tensor cut points
    assert_topological(Model.from_bytes(out).main)
    x = np.random.default_rng(0).integers(-128, 128, (1, 96, 96, 3), dtype=np.int8)
    for a, b in zip(reference_outputs(data, x), reference_outputs(out, x)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the memory model on hand-built graphs


def act(name, nbytes):
    return Tensor(name, (nbytes,), np.int8)


def test_live_bytes_follow_tensor_lifetimes():
    x, a, b, c, unused = act("x", 10), act("a", 32), act("b", 17), act("c", 16), act("unused", 5)
    w = Tensor("w", (100,), np.int8, data=np.zeros(100, np.int8))
    ops = [Op("CONV_2D", [x, w], [a]), Op("RELU", [a], [b]), Op("ADD", [b, a], [c])]
    g = Graph(ops, [x, unused], [c], [x, unused, w, a, b, c])
    # x: op 0 only; unused input: op 0; a: 0..2; b: 1..2; c: 2..end; each rounded up to 16 bytes.
    assert live_bytes_per_op(g) == [16 + 16 + 32, 32 + 32, 32 + 32 + 16]
    assert peak_live_bytes(g) == 80
    with pytest.raises(TinyVisionError):
        live_bytes_per_op(g, [ops[1], ops[0], ops[2]])  # reads a before it is produced
    with pytest.raises(TinyVisionError):
        live_bytes_per_op(g, ops[:2])


def test_ops_with_side_effects_keep_their_order():
    x = act("x", 16)
    big = [act(f"big{i}", 1000) for i in range(2)]
    small = [act(f"s{i}", 16) for i in range(2)]
    conv_a, conv_b = Op("CONV_2D", [x], [big[0]]), Op("CONV_2D", [x], [big[1]])
    custom_a = Op("MY_CUSTOM", [big[0]], [small[0]], custom_code="MY_CUSTOM")
    custom_b = Op("MY_CUSTOM", [big[1]], [small[1]], custom_code="MY_CUSTOM")
    # Two independent branches; running branch a first would be as good, but custom ops (unknown
    # effects) keep their order, so branch b must run to completion first.
    g = Graph([conv_a, conv_b, custom_b, custom_a], [x], small, [x] + big + small)
    result = reorder_graph(g)
    assert result.changed and result.peak_after < result.peak_before
    assert g.ops == [conv_b, custom_b, conv_a, custom_a]


# ---------------------------------------------------------------- random DAGs


@st.composite
def random_dags(draw, max_ops):
    """Graphs of elementwise/conv-like ops over int8 vectors of random sizes (not runnable, only planned)."""
    counter = itertools.count()

    def new_tensor():
        return act(f"t{next(counter)}", draw(st.integers(1, 80)))

    inputs = [new_tensor() for _ in range(draw(st.integers(1, 2)))]
    available, ops = list(inputs), []
    for _ in range(draw(st.integers(1, max_ops))):
        reads = draw(st.lists(st.sampled_from(available), min_size=1, max_size=3))
        if draw(st.booleans()):
            reads.append(Tensor(f"w{next(counter)}", (8,), np.int8, data=np.zeros(8, np.int8)))
        writes = [new_tensor() for _ in range(draw(st.integers(1, 2)))]
        ops.append(Op(draw(st.sampled_from(["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU"])), reads, writes))
        available += writes
    read = {t for op in ops for t in op.inputs}
    outputs = [t for op in ops for t in op.outputs if t not in read] or [ops[-1].outputs[0]]
    if draw(st.booleans()):
        outputs.append(draw(st.sampled_from(available)))
    tensors = list(dict.fromkeys(inputs + [t for op in ops for t in op.inputs + op.outputs]))
    return Graph(ops, inputs, list(dict.fromkeys(outputs)), tensors)


def assert_topological(graph):
    seen = set(graph.inputs)
    produced = graph.producers()
    for op in graph.ops:
        for t in op.inputs:
            assert t is None or t.is_constant or t in seen or t not in produced
        seen.update(op.outputs)


def brute_force_peak(graph):
    best = None
    for order in itertools.permutations(graph.ops):
        try:
            peak = peak_live_bytes(graph, order)
        except TinyVisionError:  # not a topological order
            continue
        best = peak if best is None else min(best, peak)
    return best


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags(max_ops=6))
def test_random_dags_reach_the_brute_force_optimum(graph):
    ops = set(graph.ops)
    optimum = brute_force_peak(graph)
    result = reorder_graph(graph)
    assert set(graph.ops) == ops and len(graph.ops) == len(ops)
    assert_topological(graph)
    assert result.exact
    assert result.peak_after == peak_live_bytes(graph) == optimum


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags(max_ops=16), st.sampled_from([0, 3, 50_000]))
def test_random_dags_stay_valid_and_never_get_worse(graph, budget):
    before = peak_live_bytes(graph)
    result = reorder_graph(graph, state_budget=budget)
    assert_topological(graph)
    assert result.peak_before == before
    assert result.peak_after == peak_live_bytes(graph) <= before
