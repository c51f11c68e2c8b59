"""seed003's 17-tunnel ImageNet layout on TFLM: the merge fits TFLM's CONCATENATION (<= 10 inputs),
the int8 model loads and runs bit-exact, and its tunnel split is exact.

The models are seed003_imagenet's layout (4x4 grid + centre patch = 17 shared tunnels, head) at
test size: 64x64 input, 16-px patches, two stages.
"""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf

import models
from conftest import randomize
from converters.ir import Graph, Model
from converters.patching import split_tunnels
from converters.patching.stage import derived_model
from converters.quantize import to_int8_tflite
from tinyvision.data import synthetic_arrays
from tinyvision.errors import TinyVisionError
from tinyvision.layers import PatchTunnel, segment_windows
from tinyvision.layers.tunnel import MAX_MERGE_INPUTS, merge_groups
from tinyvision.runtime import tflm
from tinyvision.runtime.patch_runner import verify_bundle

layers = tf.keras.layers
# TFLM's kMaxInputNum (tflite-micro tensorflow/lite/micro/kernels/concatenation.cc)
TFLM_CONCAT_INPUTS = 10
SMALL_STAGES = ((1, 8, 1, 1, 3, 1), (6, 16, 1, 2, 3, 2))


def small_imagenet():
    """seed003_imagenet with 17 tunnels of 16-px patches on a 64x64 image, C = 16, head 272 -> 16 -> 5."""
    return randomize(models.build("seed003_imagenet", resolution=64, patch_size=16, stages=SMALL_STAGES,
                                  head_units=16, classes=5))


@pytest.fixture(scope="module")
def imagenet_int8():
    """(keras model, full-int8 .tflite bytes), calibrated on the built-in synthetic images."""
    model = small_imagenet()
    images, _ = synthetic_arrays(4, resolution=64)
    return model, to_int8_tflite(model, images, max_samples=4)


def _concatenations(model_bytes):
    return [op for op in Model.from_bytes(model_bytes).main.ops if op.opcode == "CONCATENATION"]


# ---------------------------------------------------------------- Keras


def test_merge_groups_respect_the_tflm_limit():
    assert MAX_MERGE_INPUTS == TFLM_CONCAT_INPUTS
    assert merge_groups(17) == [[9, 8], [2]]
    assert merge_groups(10) == [[10]] and merge_groups(1) == []
    for n in (2, 11, 17, 64, 101):
        levels = merge_groups(n)
        assert sum(levels[0]) == n and len(levels[-1]) == 1
        for below, above in zip(levels, levels[1:]):
            assert sum(above) == len(below)
        assert all(2 <= size <= TFLM_CONCAT_INPUTS for level in levels for size in level)
    assert merge_groups(3, fan_in=2) == [[2, 1], [2]]
    with pytest.raises(TinyVisionError, match="max_merge_inputs"):
        PatchTunnel([dict(filters=8)], max_merge_inputs=1)


@pytest.mark.parametrize("fan_in", [MAX_MERGE_INPUTS, 2])
def test_tree_merge_equals_the_flat_concatenation(tmp_path, fan_in):
    inputs = [layers.Input((8, 8, 3)) for _ in range(17)]
    tunnel = PatchTunnel([dict(filters=8, expansion=2, stride=2, groups=2)], stem_filters=8,
                         max_merge_inputs=fan_in, name="tunnel")
    model = randomize(tf.keras.Model(inputs, tunnel(inputs)))
    patches = [np.random.default_rng(i).uniform(-1, 1, (2, 8, 8, 3)).astype("float32") for i in range(17)]
    flat = []
    for x in patches:
        for layer in tunnel.path(0):
            x = layer(x)
        flat.append(x.numpy())
    np.testing.assert_array_equal(model(patches).numpy(), np.concatenate(flat, axis=-1))

    config = tunnel.get_config()
    assert config["max_merge_inputs"] == fan_in
    assert PatchTunnel.from_config(config).get_config() == config
    path = str(tmp_path / "tunnel.keras")
    model.save(path)
    np.testing.assert_array_equal(tf.keras.models.load_model(path)(patches).numpy(), model(patches).numpy())


# ---------------------------------------------------------------- int8 on TFLM


def test_int8_merge_loads_and_runs_on_tflm_bit_exact(imagenet_int8):
    _, data = imagenet_int8
    concats = _concatenations(data)
    assert [len(op.inputs) for op in concats] and max(len(op.inputs) for op in concats) <= TFLM_CONCAT_INPUTS
    assert sorted(len(op.inputs) for op in concats) == [2, 8, 9]
    # one quantization for the whole tree: the merge only copies
    quants = {(float(t.quantization.scale[0]), int(t.quantization.zero_point[0]))
              for op in concats for t in op.inputs + op.outputs}
    assert len(quants) == 1

    result = tflm.compare(data, seed=1, samples=3)  # TFLM prepares every op (the merge too) and runs
    # TFLite >= 2.20's reference FULLY_CONNECTED requantizes in float (tensorflow/tensorflow#119412),
    # TFLM with integer double rounding: if this ever differs by 1, check the head before the tunnels.
    assert result, result.detail

    # everything before the head (17 tunnels + the merge tree) on its own
    model = Model.from_bytes(data)
    graph = model.main
    concats = [op for op in graph.ops if op.opcode == "CONCATENATION"]
    root = next(op for op in concats if op.outputs[0] not in {t for c in concats for t in c.inputs})
    ops = graph.ops[: graph.ops.index(root) + 1]
    trunk = derived_model(model, Graph(ops=ops, inputs=list(graph.inputs), outputs=[root.outputs[0]],
                                       tensors=list(graph.tensors), name=graph.name))
    result = tflm.compare(trunk.to_bytes(), seed=2, samples=2)
    assert result, result.detail


def test_tunnel_split_is_bit_exact(imagenet_int8):
    keras_model, data = imagenet_int8
    bundle = split_tunnels(data)
    channels = keras_model.get_layer("tunnel").out_channels
    assert len(bundle.patches) == 17 and bundle.last_stage["shape"] == [1, 1, 17 * channels]
    assert [p.output.c for p in bundle.patches] == [i * channels for i in range(17)]
    windows = segment_windows((64, 64), (4, 4), patch_size=16, center_patch=True)
    assert [(p.window.x, p.window.y, p.window.w, p.window.h) for p in bundle.patches] == windows
    assert all(op.opcode != "CONCATENATION"
               for m in bundle.models for op in Model.from_bytes(m.data).main.ops)
    result = verify_bundle(bundle, data, n_inputs=2)
    assert result.ok, result.detail


def test_split_rejects_a_merge_tree_that_requantizes(imagenet_int8):
    _, data = imagenet_int8
    model = Model.from_bytes(data)
    inner = next(op for op in model.main.ops if op.opcode == "CONCATENATION" and len(op.inputs) == 9)
    q = inner.outputs[0].quantization
    inner.outputs[0].quantization = type(q)(scale=q.scale * 2, zero_point=q.zero_point, axis=q.axis)
    with pytest.raises(TinyVisionError, match="quantized differently"):
        split_tunnels(model.to_bytes())


# ---------------------------------------------------------------- one model for shared tunnels


def test_qat_shared_tunnels_split_into_one_model():
    """QAT gives each shared layer one quantizer for all its calls: the tunnels convert identical.

    (Post-training calibration ranges every call separately, so its tunnels differ in scales.)
    """
    import tensorflow_model_optimization as tfmot

    from tinyvision.layers import flatten

    model = randomize(models.build("seed003_vww", resolution=32, grid=(1, 2), stem_filters=8,
                                   stages=SMALL_STAGES[:1], classes=3))  # 2 patches + centre = 3 tunnels
    images, _ = synthetic_arrays(2, resolution=32)
    data = to_int8_tflite(tfmot.quantization.keras.quantize_model(flatten(model)), images, max_samples=2)
    bundle = split_tunnels(data)
    assert [p.model for p in bundle.patches] == [0, 0, 0] and len(bundle.models) == 2
    assert bundle.stats["flash_bytes"] < bundle.stats["baseline"]["flash_bytes"]
    result = verify_bundle(bundle, data, n_inputs=2)
    assert result.ok, result.detail


# ---------------------------------------------------------------- tunnels cut into segments


def test_segmented_tunnels_run_one_tunnel_after_another_bit_exact(imagenet_int8, tmp_path):
    from converters.patching import write_bundle
    from converters.patching.bundle import finalize
    from tinyvision.bundle import check_derived, read_bundle
    from tinyvision.bundle.schedule import IMAGE

    _, data = imagenet_int8
    whole = finalize(split_tunnels(data), interpreters="one_at_a_time")
    bundle = split_tunnels(data, segments=[3])
    parts = {bundle.models[p.model].name.rsplit("_part", 1)[1] for p in bundle.patches}
    assert parts == {"0", "1"} and len(bundle.stages) == 17 + 1  # a link stage per tunnel, then the merge
    # tunnel by tunnel: part 0 fills the tunnel's link stage from the image, part 1 reads it into the merge
    assert [(p.stage, p.reads) for p in bundle.patches[:4]] == [(0, IMAGE), (17, 0), (1, IMAGE), (17, 1)]
    schedule = bundle.schedule()
    assert schedule.interleaved() and (0, 17) in schedule.together() and (0, 1) not in schedule.together()
    finalize(bundle, interpreters="one_at_a_time")
    assert [p.model for p in bundle.patches[:2]] == [0, 1]  # one_at_a_time keeps the interleaved order
    assert bundle.arena["persistent"][0]["size"] < whole.arena["persistent"][0]["size"]
    result = verify_bundle(bundle, data, n_inputs=2)
    assert result.ok, result.detail
    folder = write_bundle(bundle, str(tmp_path / "segmented"))
    check_derived(read_bundle(folder), "segmented")  # liveness-derived reservations and floors re-derived


def test_segment_cuts_are_chosen_and_checked(imagenet_int8):
    _, data = imagenet_int8
    with pytest.raises(TinyVisionError, match="cannot be cut after op 1000 "):
        split_tunnels(data, segments=[1000])
    with pytest.raises(TinyVisionError, match="segment 1 cannot be tiled"):
        split_tunnels(data, segments=[3], tiled={1: 2})  # the last segment fills the merge
    for budget in (0.0, 0.15):
        auto = split_tunnels(data, segments="auto", max_mac_overhead=budget)
        assert auto.stats["mac_overhead"] <= budget
        # every tunnel fills its own link stages, one per cut, and all of them the merged stage
        assert (len(auto.stages) - 1) % 17 == 0
        assert sum(p.stage == len(auto.stages) - 1 for p in auto.patches) == 17
    tiles = [m.name for m in auto.models if "_tile" in m.name]
    assert tiles  # the 8x8 stem and stride-2 block run over 2x2 tiles within 15% more MACs
    result = verify_bundle(auto, data, n_inputs=2)
    assert result.ok, result.detail


def test_tiled_segments_read_windows_of_the_image_then_of_a_link_stage(imagenet_int8, tmp_path):
    """Segment 0 (stem, 8x8x8 out) tile by tile from the image, segment 1 (a stride-2 block) tile by tile from
    the link stage segment 0 filled, segment 2 whole: bit-exact, each tile's window inside its source."""
    from converters.patching import write_bundle
    from converters.patching.bundle import finalize
    from tinyvision.bundle import check_derived, read_bundle
    from tinyvision.bundle.schedule import IMAGE

    _, data = imagenet_int8
    bundle = split_tunnels(data, segments=[3, 10], tiled={0: 2, 1: 2})
    first = bundle.patches[:9]  # tunnel 0: 4 tiles, 4 tiles, the last segment
    assert [p.stage for p in first] == [0] * 4 + [1] * 4 + [len(bundle.stages) - 1]
    assert [p.reads for p in first] == [IMAGE] * 4 + [0] * 4 + [1]
    stem = [(p.window.x, p.window.y, p.window.w, p.window.h) for p in first[:4]]
    assert stem[0] == (0, 0, 11, 11) and stem[3] == (6, 6, 10, 10)  # 3x3 halo on the 16-px tunnel window
    assert [(p.output.x, p.output.y, p.output.w) for p in first[4:8]] == [(0, 0, 2), (2, 0, 2), (0, 2, 2), (2, 2, 2)]
    assert all(p.window.x + p.window.w <= 8 and p.window.y + p.window.h <= 8 for p in first[4:8])
    assert bundle.stats["mac_overhead"] > 0  # the halos are computed twice
    finalize(bundle, interpreters="one_at_a_time")
    assert not bundle.arena.get("in_place")  # only whole-buffer segments run in place
    result = verify_bundle(bundle, data, n_inputs=2)
    assert result.ok, result.detail
    check_derived(read_bundle(write_bundle(bundle, str(tmp_path / "tiled"))), "tiled")


@pytest.mark.parametrize("order, message", [
    ([(1, 0), (0, -1)], "reads stage 0 before any patch fills it"),
    ([(0, -1), (1, 0), (0, -1)], "stage 0's last fill .* is never read"),
    ([(0, -1)], "the tail reads stage 1 before any patch fills it"),
    ([(0, 1), (1, -1)], "reads stage 1: a patch reads the image or an earlier stage"),
])
def test_schedule_refuses_orders_no_runtime_can_follow(order, message):
    from tinyvision.bundle.schedule import Schedule

    with pytest.raises(TinyVisionError, match=message):
        Schedule(2, order)


def test_schedule_liveness_of_grouped_and_interleaved_orders():
    from tinyvision.bundle.schedule import Schedule

    grouped = Schedule(3, [(0, -1), (0, -1), (1, 0), (2, 1), (2, 1)])
    assert not grouped.interleaved() and grouped.together() == {(0, 1), (1, 2)}
    assert [sorted(grouped.live_at(i)) for i in range(6)] == [[0], [0], [0, 1], [1, 2], [1, 2], [2]]
    # two tunnels of two segments: the link stages 0 and 1 hold one tunnel's data each, stage 2 collects both
    tunnels = Schedule(3, [(0, -1), (2, 0), (1, -1), (2, 1)])
    assert tunnels.interleaved() and tunnels.together() == {(0, 2), (1, 2)}
    assert [len(f.writes) for f in tunnels.fills] == [1, 2, 1]
    refilled = Schedule(2, [(0, -1), (1, 0), (0, -1), (1, 0)])  # one link stage refilled per tunnel
    assert [f.stage for f in refilled.fills] == [0, 1, 0] and refilled.live_at(2) == {0, 1}
