"""models: MobileNetV2 vs keras.applications, RD variant, seed003 configs, describe, zoo."""
import numpy as np
import pytest

import tinyvision  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import models
from models.memory import tunnel_steps
from tinyvision.errors import TinyVisionError
from tinyvision.layers import PatchTunnel, flatten

layers = tf.keras.layers
rng = np.random.default_rng(1)


@pytest.fixture(scope="module")
def mobilenet_pair():
    """(ours, keras.applications) MobileNetV2 alpha 0.35 at 96 px, with the same weights."""
    reference = tf.keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, include_top=True,
        classifier_activation=None)
    for w in reference.weights:
        positive = "variance" in w.name
        w.assign(rng.uniform(0.5, 1.5, w.shape) if positive else rng.normal(0, 0.3, w.shape))
    ours = flatten(models.mobilenet_v2(alpha=0.35, resolution=96))
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    return ours, reference


@pytest.fixture(scope="module")
def seed003_imagenet():
    return models.build("seed003_imagenet")


def _stable_name(layer):
    """Layer name without Keras's session-wide auto-numbering (``global_average_pooling2d_3``)."""
    import re

    from tf_keras.src.utils.generic_utils import to_snake_case

    return re.sub(rf"^({to_snake_case(type(layer).__name__)})_\d+$", r"\1", layer.name)


def test_mobilenet_v2_has_the_keras_applications_topology(mobilenet_pair):
    ours, reference = mobilenet_pair
    assert len(ours.layers) == len(reference.layers)
    assert ours.count_params() == reference.count_params()
    assert sorted((type(l).__name__, _stable_name(l)) for l in ours.layers[1:]) == \
        sorted((type(l).__name__, _stable_name(l)) for l in reference.layers[1:])
    x = rng.uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-4)


def test_mobilenet_v2_same_padding_and_qat(mobilenet_pair):
    ours, reference = mobilenet_pair
    same = flatten(models.mobilenet_v2(alpha=0.35, resolution=96, keras_padding=False))
    assert len(same.layers) == len(reference.layers) - 4  # the four ZeroPadding2D
    for layer in reference.layers:
        if layer.weights:
            same.get_layer(layer.name).set_weights(layer.get_weights())
    x = rng.uniform(-1, 1, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(same(x).numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-4)

    qat = tfmot.quantization.keras.quantize_model(same)
    assert qat(x).shape == (1, 1000)


def test_rd_variant_shrinks_the_per_patch_receptive_field():
    base = models.mobilenet_v2(alpha=0.35, resolution=64, classes=10)
    rd = models.mobilenet_v2_rd(alpha=0.35, resolution=64, classes=10)
    assert models.receptive_field(base, max_stride=8) == (59, 8)
    assert models.receptive_field(rd, max_stride=8) == (35, 8)
    assert models.receptive_field(rd)[0] > models.receptive_field(base)[0]
    blocks = [l for l in rd.layers if type(l).__name__ == "InvertedResidual"]
    assert len(blocks) == 17 and {b.kernel_size for b in blocks} == {3, 5, 7}
    assert rd.output_shape == base.output_shape == (None, 10)


def test_describe_counts_a_small_model():
    inputs = layers.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)           # 4x4x4
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)    # 4x4x4
    x = layers.BatchNormalization()(x)
    x = layers.Dense(5)(layers.GlobalAveragePooling2D()(x))
    stats = models.describe(tf.keras.Model(inputs, x))
    assert stats["macs"] == 4 * 4 * 4 * 3 * 3 * 3 + 4 * 4 * 4 * 3 * 3 + 4 * 5
    assert stats["flash_bytes"] == (3 * 3 * 3 * 4 + 4 * 4) + (3 * 3 * 4 + 4 * 4) + (4 * 5 + 4 * 5)
    assert stats["params"] == (108 + 4) + 36 + 4 * 4 + (20 + 5)


def test_describe_counts_shared_tunnels_per_call():
    five = models.seed003("vww", resolution=64)  # 2x2 grid + centre of 40-px patches
    one = models.seed003("vww", resolution=40, grid=1, center_patch=False)  # one 40-px tunnel
    head = 64 * 2  # per tunnel: 64 pooled features x 2 classes
    assert models.macs(five) == 5 * (models.macs(one) - head) + 5 * head
    assert models.flash_bytes(five) == models.flash_bytes(one) + 4 * head  # shared weights once


def test_seed003_imagenet_fits(seed003_imagenet):
    model = seed003_imagenet
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    tunnel = model.get_layer("tunnel")
    assert tunnel.n_tunnels == 17 and tunnel.shared
    assert len(model.get_layer("segmentation").windows) == 17
    peak, where = models.tunnel_peak(model)
    assert peak <= 60 * 1024, where
    assert models.flash_bytes(model) <= 1024 * 1024


def test_groups_lower_the_tunnel_peak():
    def peak(groups):
        tunnel = PatchTunnel([dict(filters=8, expansion=1),
                              dict(filters=16, stride=2, groups=groups)])
        tunnel([layers.Input((64, 64, 3))])
        return max(live for _, live in tunnel_steps(tunnel, (64, 64, 3)))
    # G=1: block 1's depthwise, expanded 32*32*48 + output 16*16*48 (its input is dead)
    assert peak(1) == 32 * 32 * 48 + 16 * 16 * 48
    # G=4: block 1 (at most x 32*32*8 + sum 16*16*16 + 32*32*12 + 16*16*12 = 27648) drops
    # below block 0's depthwise, input 32*32*16 + output 32*32*16
    assert peak(4) == 2 * 32 * 32 * 16


def test_seed003_vww_overrides():
    model = models.seed003("vww", resolution=96, overlap=8)
    assert model.output_shape == (None, 2)
    seg = model.get_layer("segmentation")
    assert seg.windows[0][2] == (96 + 8) // 2 and len(seg.windows) == 5
    independent = models.seed003("vww", resolution=96, shared=False, classes=3)
    assert independent.get_layer("tunnel").get_config()["shared"] is False
    assert models.flash_bytes(independent) > 4 * models.flash_bytes(model)
    with pytest.raises(TinyVisionError):
        models.seed003("cifar")


def test_zoo_builds(seed003_imagenet):
    expected = {"mobilenet_v2_0.35_96": (96, 1000), "mobilenet_v2_0.35_144": (144, 1000),
                "mobilenet_v2_1.0_224": (224, 1000), "mobilenet_v2_rd_0.35_144": (144, 1000),
                "seed003_imagenet": (224, 1000), "seed003_vww": (128, 2)}
    # The detectors' own checks are in tests/test_detection.py and tests/test_box_detector.py.
    assert set(models.ZOO) == set(expected) | {"fomo_mobilenet_v2_0.35_160", "yolo_mobilenet_v2_0.35_224"}
    for name, (size, classes) in expected.items():
        model = seed003_imagenet if name == "seed003_imagenet" else models.build(name)
        assert model.input_shape == (None, size, size, 3), name
        assert model.output_shape == (None, classes), name
    assert models.build("seed003_vww", resolution=96).input_shape == (None, 96, 96, 3)
    with pytest.raises(TinyVisionError, match="unknown model"):
        models.build("resnet50")
    with pytest.raises(TinyVisionError):
        models.build("seed003_vww", colour=True)
