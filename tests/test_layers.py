"""tinyvision.layers: configs, saving, grouping, segmentation, flatten, QAT, TFLite ops."""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from conftest import randomize
from models import seed003
from tinyvision.errors import TinyVisionError
from tinyvision.layers import (InputSegmentation, InvertedResidual, PatchTunnel,
                               ReorderedBottleneck, flatten, segment_windows)
from tinyvision.layers._common import Composite

layers = tf.keras.layers
rng = np.random.default_rng(0)

# seed003's architecture (segmentation + centre patch, shared tunnel, grouped blocks,
# head) at test size: 64x64 input, three stages.
SMALL_STAGES = ((1, 8, 1, 1, 3, 1), (6, 16, 1, 2, 3, 2), (6, 16, 1, 1, 3, 3))


def small_seed003(**overrides):
    return seed003("vww", **{"resolution": 64, "stages": SMALL_STAGES, **overrides})


def images(n, size, channels=3):
    return rng.uniform(0, 1, (n, size, size, channels)).astype("float32")


def apply(layer, shape):
    """Build ``layer`` inside a model on an input of ``shape`` (no batch)."""
    inputs = layers.Input(shape)
    return randomize(tf.keras.Model(inputs, layer(inputs)))


# ---- InputSegmentation --------------------------------------------------------------


def test_windows_spread_evenly_and_cover_the_image():
    windows = segment_windows((224, 224), (4, 4), patch_size=64, center_patch=True)
    assert len(windows) == 17
    covered = np.zeros((224, 224), bool)
    for x, y, w, h in windows[:16]:
        assert (w, h) == (64, 64) and 0 <= x <= 224 - w and 0 <= y <= 224 - h
        covered[y:y + h, x:x + w] = True
    assert covered.all()
    starts = sorted({x for x, _, _, _ in windows[:16]})
    assert starts[0] == 0 and starts[-1] == 224 - 64
    steps = np.diff(starts)
    assert steps.max() - steps.min() <= 1  # evenly spread
    assert windows[16] == (80, 80, 64, 64)  # centre


def test_patch_size_from_overlap():
    windows = segment_windows((128, 96), (2, 3), overlap=(16, 8))
    (x0, y0, w, h), (x1, _, _, _) = windows[0], windows[1]
    assert (w, h) == (np.ceil((96 + 2 * 8) / 3), np.ceil((128 + 16) / 2))
    assert x0 + w - x1 >= 8
    bottom = windows[3]
    assert y0 + h - bottom[1] >= 16 and bottom[1] + bottom[3] == 128


def test_bad_geometry_raises():
    with pytest.raises(TinyVisionError, match="cover"):
        segment_windows((100, 100), (2, 2), patch_size=40)
    with pytest.raises(TinyVisionError, match="larger"):
        InputSegmentation(grid=1, patch_size=120, image_size=(100, 100))


def test_segmentation_outputs_are_the_windows():
    seg = InputSegmentation(grid=(2, 3), overlap=5, center_patch=True, center_size=(20, 10))
    model = apply(seg, (40, 50, 2))
    x = rng.uniform(0, 1, (2, 40, 50, 2)).astype("float32")
    patches = model(x)
    assert len(patches) == len(seg.windows) == 7
    for (px, py, w, h), patch in zip(seg.windows, patches):
        np.testing.assert_array_equal(patch.numpy(), x[:, py:py + h, px:px + w])
    assert seg.windows[-1] == ((50 - 10) // 2, (40 - 20) // 2, 10, 20)


# ---- configs and saving -------------------------------------------------------------


def test_get_config_round_trip_and_structure():
    built = [
        (InputSegmentation(grid=2, overlap=4, center_patch=True), (32, 32, 3)),
        (InvertedResidual(16, expansion=6, stride=2, kernel_size=5, keras_padding=True), (9, 9, 8)),
        (ReorderedBottleneck(8, expansion=4, groups=3), (8, 8, 8)),
    ]
    for layer, shape in built:
        apply(layer, shape)
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
    seg_config = built[0][0].get_config()
    assert seg_config["windows"] == [list(w) for w in built[0][0].windows]
    assert built[2][0].get_config()["groups"] == 3

    tunnel = PatchTunnel([dict(filters=8, expansion=1), dict(filters=8, groups=2)], stem_filters=8,
                         shared=False)
    inputs = [layers.Input((16, 16, 3)) for _ in range(3)]
    assert tunnel(inputs).shape == (None, 3 * 8)
    config = tunnel.get_config()
    assert (config["n_tunnels"], config["shared"]) == (3, False)
    assert PatchTunnel.from_config(config).get_config() == config


def test_keras_file_round_trip(tmp_path):
    inputs = layers.Input((32, 32, 3))
    x = InvertedResidual(3, expansion=2, name="pre")(inputs)
    patches = InputSegmentation(grid=2, overlap=4, center_patch=True)(x)
    x = PatchTunnel([dict(filters=8, expansion=1), dict(filters=16, stride=2, groups=2)],
                    stem_filters=8, last_filters=24, shared=False)(patches)
    model = randomize(tf.keras.Model(inputs, layers.Dense(3)(x)))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    x = images(2, 32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]


# ---- bottlenecks --------------------------------------------------------------------


@pytest.mark.parametrize("groups,stride,cin,cout", [(4, 1, 8, 8), (5, 2, 8, 16), (2, 1, 6, 12)])
def test_grouped_block_equals_standard_block(groups, stride, cin, cout):
    standard = ReorderedBottleneck(cout, expansion=6, stride=stride, groups=1)
    grouped = ReorderedBottleneck(cout, expansion=6, stride=stride, groups=groups)
    apply(standard, (10, 10, cin))
    apply(grouped, (10, 10, cin))
    grouped.set_standard_weights(standard.standard_weights())
    x = rng.normal(0, 1, (2, 10, 10, cin)).astype("float32")
    expected = standard(x, training=False).numpy()
    np.testing.assert_allclose(grouped(x, training=False).numpy(), expected, atol=1e-5)

    # and back: independent group BNs (different scales) merge exactly into G = 1
    randomize(tf.keras.Model(grouped.input, grouped.output))
    merged = ReorderedBottleneck(cout, expansion=6, stride=stride, groups=1)
    apply(merged, (10, 10, cin))
    merged.set_standard_weights(grouped.standard_weights())
    np.testing.assert_allclose(merged(x, training=False).numpy(),
                               grouped(x, training=False).numpy(), atol=1e-5)


def test_one_group_is_the_inverted_residual():
    block = ReorderedBottleneck(8, expansion=3, groups=1)
    reference = InvertedResidual(8, expansion=3)
    apply(block, (6, 6, 8))
    apply(reference, (6, 6, 8))
    reference.set_weights(block.get_weights())
    x = rng.normal(0, 1, (1, 6, 6, 8)).astype("float32")
    np.testing.assert_allclose(reference(x).numpy(), block(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("size", [9, 10])
def test_keras_padding_matches_same_padding(size):
    explicit = InvertedResidual(8, stride=2, kernel_size=5, keras_padding=True)
    same = InvertedResidual(8, stride=2, kernel_size=5)
    apply(explicit, (size, size, 4))
    apply(same, (size, size, 4))
    same.set_weights(explicit.get_weights())
    x = rng.normal(0, 1, (1, size, size, 4)).astype("float32")
    np.testing.assert_allclose(explicit(x).numpy(), same(x).numpy(), atol=1e-5)


def test_groups_need_an_expansion():
    with pytest.raises(TinyVisionError):
        ReorderedBottleneck(8, expansion=1, groups=2)


# ---- flatten, QAT, TFLite -----------------------------------------------------------


def test_flatten_equivalence_and_qat_on_seed003():
    model = randomize(small_seed003())
    flat = flatten(model)
    x = images(2, 64)
    np.testing.assert_allclose(flat(x).numpy(), model(x).numpy(), atol=1e-5)
    inner = [getattr(l, "layer", l) for l in flat.layers]  # QuantizeAnnotate is transparent
    assert not any(isinstance(l, (Composite, layers.Lambda)) for l in inner)
    assert all(type(l).__module__.startswith("tf_keras.") for l in inner)
    # shared tunnel: the stem conv is one layer called once per patch (2x2 grid + centre)
    stem = model.get_layer("tunnel").path(0)[0]
    assert sum(1 for l in inner if l is stem) == 1 and len(stem.inbound_nodes) >= 5

    pure = flatten(model, annotate_shared=False)
    assert all(type(l).__module__.startswith("tf_keras.") for l in pure.layers)

    qat = tfmot.quantization.keras.quantize_model(flat)
    out = qat(x).numpy()
    assert out.shape == (2, 2) and np.isfinite(out).all()


def test_int8_tflite_has_builtin_ops_only():
    # independent tunnels, so each op appears per tunnel as in any unshared model
    model = randomize(small_seed003(grid=(1, 2), stages=SMALL_STAGES[:2], shared=False))

    def representative():
        for _ in range(2):
            yield [images(1, 64)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    # BN folded into convs, ReLU6 fused, crops as slices: nothing else (no MUL, PAD, custom)
    assert ops == {"STRIDED_SLICE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN",
                   "CONCATENATION", "FULLY_CONNECTED"}
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
