"""Anchor-based box detection end to end: the BoxHead layer, k-means anchors, target coding and decoding on
hand cases, a tiny box detector trained with QAT, converted to int8, run on TFLM and as a patch bundle
(bit-exact), and the device's C++ box decoder against the Python one."""
import os
import shutil
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tflm_app")
CXX = shutil.which("g++")
RESOLUTION = 96  # the tiny detector: a 6 x 6 grid at stride 16


# --- layer, model, anchors --------------------------------------------------------------------

def test_box_head_shapes_and_config_round_trip(tmp_path):
    import tensorflow as tf

    from tinyvision.errors import TinyVisionError
    from tinyvision.layers import BoxHead

    inputs = tf.keras.Input((5, 7, 16))
    anchors = [[10.0, 12.0], [30.0, 20.0]]
    head = BoxHead(anchors, 3, 16, hidden=8, name="head")
    model = tf.keras.Model(inputs, head(inputs))
    assert model.output_shape == (None, 5, 7, 2 * (5 + 3))
    model.save(tmp_path / "head.keras")
    loaded = tf.keras.models.load_model(tmp_path / "head.keras").get_layer("head")
    assert {k: loaded.get_config()[k] for k in ("anchors", "classes", "stride", "hidden")} == {
        "anchors": anchors, "classes": 3, "stride": 16, "hidden": 8}
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 16)).astype(np.float32)
    out = model(x).numpy()
    np.testing.assert_array_equal(out, tf.keras.Model(inputs, loaded(inputs))(x).numpy())
    assert 0 < out.min() and out.max() < 1  # every channel through the sigmoid
    for bad in ({"anchors": [[10, 0]]}, {"anchors": [10, 10]}, {"classes": 0}, {"stride": 0}, {"hidden": -1}):
        with pytest.raises(TinyVisionError):
            BoxHead(**{"anchors": anchors, "classes": 3, "stride": 16, **bad})


def test_zoo_box_detector_and_build_list():
    import models
    from models.zoo import FIGURES_FILE

    name = "yolo_mobilenet_v2_0.35_224"
    assert models.TASKS[name] == "detection" and models.TASKS["fomo_mobilenet_v2_0.35_160"] == "detection"
    model = models.build(name)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 14, 14, 3 * (5 + 3))
    names = [layer.name for layer in model.layers]
    assert "block_12" in names and "block_13" not in names  # cut at stride 16
    assert model.get_layer("box_head").get_config()["anchors"] == models.build(name).get_layer(
        "box_head").get_config()["anchors"]
    with open(FIGURES_FILE, encoding="utf-8") as f:
        assert f'"{name}": {{"input": [224, 224, 3], "task": "detection", "classes": 3,' in f.read()


def test_qat_wraps_the_box_detector():
    from models import box_detector
    from tinyvision.training import quantize

    model = box_detector(resolution=64, anchors=[[12.0, 12.0]], hidden=0)
    qat = quantize(model)
    assert qat.output_shape == model.output_shape == (None, 4, 4, 8)
    assert any("sigmoid" in layer.name for layer in qat.layers)


def test_kmeans_anchors_are_deterministic_and_find_clusters():
    from tinyvision.detection import kmeans_anchors, procedural_anchors

    rng = np.random.default_rng(0)
    centres = np.array([[8.0, 8.0], [20.0, 40.0], [60.0, 30.0]])
    sizes = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    found = kmeans_anchors(sizes, 3)
    np.testing.assert_allclose(found, centres, rtol=0.03)  # by ascending area
    np.testing.assert_array_equal(found, kmeans_anchors(sizes, 3))
    np.testing.assert_allclose(kmeans_anchors(rng.permutation(sizes), 3), found, rtol=1e-12)
    a = procedural_anchors(3, 160, samples=60)
    np.testing.assert_array_equal(a, procedural_anchors(3, 160, samples=60))
    np.testing.assert_allclose(procedural_anchors(3, 320, samples=60), 2 * a)
    assert np.all(np.diff(a.prod(axis=1)) > 0) and 10 < a.min() and a.max() < 60  # boxes of 6-16 % of 160 px x 2


# --- target coding and decoding on hand cases -------------------------------------------------

def test_targets_assign_the_centre_cell_and_best_anchor():
    from tinyvision.detection import BoxCoding

    coding = BoxCoding([[10, 10], [30, 30]], classes=2, stride=8)
    box = [[-2.0, 6.0, 26.0, 34.0]]  # centre (12, 20): row 2, column 1; 28 x 28 px: anchor 1 fits best
    t = coding.targets(box, [1], grid=(4, 4)).reshape(4, 4, 2, 7)
    assert np.count_nonzero(t[..., 4]) == 1 and t[2, 1, 1, 4] == 1
    np.testing.assert_allclose(t[2, 1, 1], [0.5, 0.5, np.sqrt(28 / 30) / 2, np.sqrt(28 / 30) / 2, 1, 0, 1], rtol=1e-6)
    extra = coding.targets(box, [1], grid=(4, 4), extra_iou=0.1).reshape(4, 4, 2, 7)  # IoU with anchor 0: 0.128
    assert np.flatnonzero(extra[..., 4]).tolist() == [2 * 8 + 1 * 2, 2 * 8 + 1 * 2 + 1]
    np.testing.assert_allclose(extra[2, 1, 0, 2:4], np.sqrt(28 / 10) / 2 * np.ones(2), rtol=1e-6)
    assert not coding.targets(box, [1], grid=(4, 4), extra_iou=0.2).reshape(4, 4, 2, 7)[2, 1, 0].any()


def test_decoding_the_targets_gives_back_the_boxes():
    from tinyvision.data.detection import detection_samples
    from tinyvision.detection import BoxCoding, GroundTruth, coco_map, procedural_anchors, voc_map

    samples = detection_samples(30, RESOLUTION, seed=2)
    coding = BoxCoding(procedural_anchors(3, RESOLUTION), classes=3, stride=16)
    found = [coding.decode(coding.targets(s.boxes, s.classes, (6, 6)), threshold=0.5) for s in samples]
    truth = [GroundTruth.of(s) for s in samples]
    for detections, sample in zip(found, samples):
        order = np.lexsort(sample.boxes.T[::-1])
        got = np.array([d.box for d in detections]).reshape(-1, 4)
        np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], sample.boxes[order], atol=1e-4)
        assert sorted(d.cls for d in detections) == sorted(sample.classes.tolist())
    assert voc_map(found, truth).value == 1.0 and coco_map(found, truth).value == 1.0


def test_decoder_threshold_nms_and_int8_input():
    from tinyvision.detection import BoxCoding

    coding = BoxCoding([[16, 16]], classes=2, stride=16)
    out = np.zeros((2, 2, 7), np.float32)
    out[..., :4] = 0.5  # each slot: a 16 x 16 box on its cell
    out[0, 0, 4:] = [0.9, 0.2, 0.8]   # class 1, score 0.72
    out[0, 1, 4:] = [0.8, 0.9, 0.1]   # class 0, score 0.72: ties keep raster order
    out[1, 1, 4:] = [0.3, 0.5, 0.4]   # 0.15: under the threshold
    out[1, 0, :4] = [0.25, 0.0, 1.0, 1.0]  # a 64 x 64 box centred on (8, 8), clipped to the 32 x 32 image
    out[1, 0, 4:] = [0.6, 0.1, 1.0]   # class 1, 0.6: overlaps the first box by IoU 0.25
    found = coding.decode(out, threshold=0.2, iou_threshold=0.3)
    assert [(d.cls, d.box, round(d.score, 6)) for d in found] == [
        (1, (0.0, 0.0, 16.0, 16.0), 0.72), (0, (16.0, 0.0, 32.0, 16.0), 0.72), (1, (0.0, 0.0, 32.0, 32.0), 0.6)]
    assert len(coding.decode(out, threshold=0.2, iou_threshold=0.2)) == 2
    assert len(coding.decode(out, threshold=0.2, max_candidates=2)) == 2
    q = np.round(out * 256 - 128).clip(-128, 127).astype(np.int8)
    assert [d.cls for d in coding.decode(q, 0.2, 0.3, scale=1 / 256, zero_point=-128)] == [1, 0, 1]


def test_box_loss_terms():
    import tensorflow as tf

    from tinyvision.detection import BoxCoding, BoxLoss

    coding = BoxCoding([[16, 16]], classes=2, stride=16)
    y_true = coding.targets([[4.0, 4.0, 20.0, 20.0]], [0], (2, 2))[None]
    perfect = np.clip(y_true, 1e-7, 1 - 1e-7)
    loss = BoxLoss(2)
    assert float(loss(tf.constant(y_true), tf.constant(perfect))) < 1e-5
    shifted = perfect.copy()
    shifted[0, 0, 0, 0] += 0.1  # box x offset 0.1 off: 5 * 0.1 over one object
    assert float(loss(tf.constant(y_true), tf.constant(shifted))) == pytest.approx(0.5, rel=1e-4)
    assert BoxLoss.from_config(loss.get_config()).get_config() == loss.get_config()


# --- a tiny box detector: training, int8, bundle, C++ decoder ---------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(training result, coding, int8 .tflite bytes, val images, val samples) of a 96 px box detector, trained
    in float and converted with calibration (a QAT model takes three times as long to convert; QAT itself:
    test_qat_wraps_the_box_detector)."""
    from converters.quantize import to_int8_tflite
    from models import box_detector
    from tinyvision.data.detection import detection_arrays
    from tinyvision.detection import BoxCoding, procedural_anchors
    from tinyvision.detection.box_coding import box_targets
    from tinyvision.training import train

    coding = BoxCoding(procedural_anchors(3, RESOLUTION), classes=3, stride=16)
    images, _, samples = detection_arrays(64, RESOLUTION, seed=1)
    result = train(lambda: box_detector(resolution=RESOLUTION, anchors=coding.anchors, hidden=8),
                   (images, box_targets(samples, coding, (6, 6))), epochs=3, qat=False, batch_size=16,
                   learning_rate=5e-3, seed=0, verbose=0)
    tflite = to_int8_tflite(result.model, images, max_samples=8)
    val_images, _, val_samples = detection_arrays(8, RESOLUTION, seed=1, split="val")
    return result, coding, tflite, val_images, val_samples


def test_training_picks_the_box_loss_and_lowers_it(tiny):
    result = tiny[0]
    assert type(result.float_model.loss).__name__ == "BoxLoss"
    losses = result.float_history["loss"]
    assert losses[-1] < 0.95 * losses[0]


def test_int8_on_tflm_decodes_to_the_float_boxes(tiny):
    from tinyvision.detection.box_metrics import box_iou
    from tinyvision.detection.runtime import keras_heatmaps, tflm_heatmaps

    result, coding, tflite, images, _ = tiny
    float_out = keras_heatmaps(result.model, images).values
    int8 = tflm_heatmaps(tflite, images)
    assert int8.values.shape == (8, 6, 6, 24) and (int8.scale, int8.zero_point) == (1 / 256, -128)
    ious, score_errors = [], []
    for f, q in zip(float_out, int8.values):  # slot by slot: a briefly trained model's ranking is not stable
        float_boxes, _, float_scores = coding.slots(f)
        int8_boxes, _, int8_scores = coding.slots(q, int8.scale, int8.zero_point)
        ious.append(np.diag(box_iou(float_boxes, int8_boxes)))
        score_errors.append(np.abs(float_scores - int8_scores))
    assert np.median(np.concatenate(ious)) > 0.97 and np.mean(np.concatenate(score_errors)) < 0.005


def test_patch_bundle_is_bit_exact(tiny, tmp_path):
    from converters.patching import read_bundle, split_stages, write_bundle
    from converters.patching.bundle import finalize
    from tinyvision.detection.runtime import bundle_heatmaps, tflm_heatmaps
    from tinyvision.runtime.patch_runner import verify_bundle

    _, coding, tflite, images, _ = tiny
    bundle = finalize(split_stages(tflite, [(6, 2)]))
    assert verify_bundle(bundle, tflite).ok
    write_bundle(bundle, tmp_path / "bundle")
    split = bundle_heatmaps(read_bundle(str(tmp_path / "bundle")), images)
    whole = tflm_heatmaps(tflite, images)
    np.testing.assert_array_equal(split.values, whole.values)
    for s, w in zip(split.values, whole.values):
        assert coding.decode(s, 0.05, scale=split.scale, zero_point=split.zero_point) == coding.decode(
            w, 0.05, scale=whole.scale, zero_point=whole.zero_point)


@pytest.mark.skipif(CXX is None, reason="no g++ on PATH: the host C++ tests need a C++17 compiler")
def test_device_box_decoder_matches_python(tiny, tmp_path):
    from tinyvision.detection import BoxCoding
    from tinyvision.detection.runtime import tflm_heatmaps

    exe = tmp_path / "box_check"
    cmd = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-ffp-contract=off",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", os.path.join(APP, "box_decoder.cpp"),
           os.path.join(APP, "tests", "box_check.cpp"), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    def device(outputs, coding, scale, zero_point, threshold, iou_threshold, max_detections):
        outputs.astype(np.int8).tofile(tmp_path / "outputs.bin")
        n, rows, cols, _ = outputs.shape
        floats = [repr(float(np.float32(v))) for v in (coding.stride, scale, threshold)]
        anchors = [repr(float(v)) for v in np.asarray(coding.anchors, np.float32).reshape(-1)]
        args = [str(exe), str(tmp_path / "outputs.bin"), str(n), str(rows), str(cols), str(coding.classes),
                floats[0], floats[1], str(zero_point), floats[2], repr(iou_threshold), str(max_detections), *anchors]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        found, lines = [], out.stdout.splitlines()
        while lines:
            count = int(lines.pop(0).split()[2])
            rows_ = [lines.pop(0).split() for _ in range(count)]
            found.append([(int(r[0]), tuple(float.fromhex(v) for v in r[1:5]), float.fromhex(r[5])) for r in rows_])
        return found

    def python(outputs, coding, scale, zero_point, threshold, iou_threshold, max_detections):
        return [[(d.cls, d.box, d.score) for d in coding.decode(o, threshold, iou_threshold, max_detections,
                                                                  scale=scale, zero_point=zero_point)]
                for o in outputs]

    rng = np.random.default_rng(7)
    wide = BoxCoding([[7.5, 9.25], [20.0, 14.0], [33.3, 41.7]], classes=4, stride=8)
    cases = [(rng.integers(-128, 128, (12, 5, 7, 27)), wide, 0.0173, -3, 0.2, 0.45, 16),  # NMS, capacity caps
             (rng.integers(-2, 3, (12, 4, 4, 27)), wide, 0.5, 0, 0.0, 0.5, 100),       # ties everywhere
             (rng.integers(-128, 128, (6, 3, 3, 27)), wide, 1 / 256, -128, 0.9, 0.5, 16)]  # few candidates
    _, coding, tflite, images, _ = tiny
    heatmaps = tflm_heatmaps(tflite, images)
    cases.append((heatmaps.values, coding, heatmaps.scale, heatmaps.zero_point, 0.05, 0.5, 16))
    for outputs, case_coding, *settings in cases:
        expected = python(outputs, case_coding, *settings)
        assert device(outputs, case_coding, *settings) == expected
    assert sum(map(len, expected)) > 0
