"""Centroid detection end to end: the CentroidHead layer, the built-in detection data, the decoder and the
centroid metric on hand-made maps, a tiny detector trained with QAT, converted to int8 and split into a
patch bundle (bit-exact on TFLM), and the device's C++ decoder against the Python one."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tflm_app")
CXX = shutil.which("g++")
RESOLUTION = 64  # the tiny detector: an 8 x 8 grid


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


# --- layer and model --------------------------------------------------------------------------

def test_centroid_head_shapes_and_serialization(tmp_path):
    import tensorflow as tf

    from tinyvision.errors import TinyVisionError
    from tinyvision.layers import CentroidHead

    inputs = tf.keras.Input((5, 7, 16))
    assert CentroidHead(2, 0)(inputs).shape.as_list() == [None, 5, 7, 3]  # the logits convolution alone
    model = tf.keras.Model(inputs, CentroidHead(3, 8, name="head")(inputs))
    assert model.output_shape == (None, 5, 7, 4)
    model.save(tmp_path / "head.keras")
    loaded = tf.keras.models.load_model(tmp_path / "head.keras")
    assert {k: loaded.get_layer("head").get_config()[k] for k in ("classes", "hidden")} == {"classes": 3, "hidden": 8}
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 16)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    for bad in ({"classes": 0}, {"classes": 2, "hidden": -1}):
        with pytest.raises(TinyVisionError):
            CentroidHead(**bad)


def test_zoo_detector_is_fully_convolutional_at_stride_8():
    import models
    from tinyvision.layers import flatten

    model = models.build("fomo_mobilenet_v2_0.35_160")
    assert models.TASKS["fomo_mobilenet_v2_0.35_160"] == "detection"
    assert model.input_shape == (None, 160, 160, 3) and model.output_shape == (None, 20, 20, 4)
    names = [layer.name for layer in model.layers]
    assert "block_5" in names and "block_6" not in names  # cut at stride 8
    assert not any("pool" in type(layer).__name__.lower() for layer in flatten(model).layers)


def test_build_refuses_a_model_of_another_task(tmp_path):
    done = _cli("build", "--model=seed003_vww", "--task=detection", f"--output={tmp_path / 'm.keras'}")
    assert done.returncode != 0
    assert "seed003_vww is a classification model" in done.stderr and "fomo_mobilenet_v2_0.35_160" in done.stderr


# --- data -------------------------------------------------------------------------------------

def test_detection_data_is_deterministic_and_targets_hold_every_centre():
    from tinyvision.data.detection import centroid_targets, detection_arrays, detection_samples

    a, b = detection_samples(12, 96, seed=3), detection_samples(12, 96, seed=3)
    other = detection_samples(12, 96, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.boxes, y.boxes)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, other))
    counts = [len(s.classes) for s in detection_samples(60, 96)]
    assert max(counts) >= 4 and min(counts) == 0
    images, targets, samples = detection_arrays(12, 96, seed=3)
    assert images.shape == (12, 96, 96, 3) and images.dtype == np.float32 and -1 <= images.min() < images.max() <= 1
    assert targets.shape == (12, 12, 12)
    for target, sample in zip(targets, samples):
        np.testing.assert_array_equal(target, centroid_targets(sample))
        assert np.count_nonzero(target) == len(sample.classes)  # one object per cell
        for (x, y), cls in zip(sample.centres, sample.classes):
            assert target[int(y // 8), int(x // 8)] == cls + 1
        assert np.all(sample.boxes[:, :2] >= 0) and np.all(sample.boxes[:, 2:] <= 96)


def test_boxes_are_the_shapes_exact_extents():
    from tinyvision.data import detection
    from tinyvision.data.synthetic import _local

    rng = np.random.default_rng(0)
    step = 1 / 2048
    c = np.arange(0, 1, step) + step / 2
    grid = np.meshgrid(c, c)
    for cls, name in enumerate(detection.DETECTION_CLASSES):
        sdf_fn = detection._SHAPES[name][0]
        for _ in range(3):
            scale, angle = rng.uniform(*detection._SCALE_RANGE), rng.uniform(0, 2 * np.pi)
            inside = sdf_fn(*_local(grid, 0.5, 0.5, 0.0 if cls == 0 else angle, scale), None) <= 0
            ys, xs = np.nonzero(inside)
            lo, hi = detection._extent(cls, scale, 0.0 if cls == 0 else angle)
            painted = np.array([c[xs.min()], c[ys.min()], c[xs.max()], c[ys.max()]]) - 0.5
            np.testing.assert_allclose(painted, np.concatenate([lo, hi]), atol=2 * step, err_msg=name)


# --- decoding and metrics on hand-made maps ---------------------------------------------------

def test_decoder_peaks_plateaus_threshold_and_order():
    from tinyvision.detection import Detection, decode_centroids, quantize_threshold

    h = np.zeros((4, 5, 3), np.int8)
    h[..., 0] = 100                  # background never decodes
    h[0, 0, 1] = 60                  # border peak of class 0
    h[2, 2, 1], h[2, 3, 1] = 50, 50  # a plateau: one detection, at its first cell
    h[1, 1, 1] = 49                  # below its neighbour (2, 2): not a peak
    h[3, 4, 2] = 30                  # class 1, under the threshold 40
    h[1, 3, 2] = 90                  # class 1 peak; class 0 at the same cell is 0
    assert decode_centroids(h, 40) == [Detection(0, 0, 0, 60), Detection(1, 3, 1, 90), Detection(0, 2, 2, 50)]
    assert decode_centroids(h, 20) == [Detection(0, 0, 0, 60), Detection(1, 3, 1, 90), Detection(0, 2, 2, 50),
                                       Detection(1, 4, 3, 30)]
    assert decode_centroids(h, 40, max_detections=2) == [Detection(0, 0, 0, 60), Detection(1, 3, 1, 90)]
    f = (h.astype(np.float32) + 128) / 256  # the same map as probabilities: the same cells
    assert quantize_threshold(0.6, 1 / 256, -128) == 26
    assert [(d.cls, d.x, d.y) for d in decode_centroids(f, 0.6)] == [(0, 0, 0), (1, 3, 1), (0, 2, 2), (1, 4, 3)]
    assert quantize_threshold(0.5, 1 / 256, -128) == 0
    assert quantize_threshold(0.5, 0.003, -128) == 39  # ceil(166.67) - 128
    assert quantize_threshold(2.0, 1 / 256, -128) == 127


def test_centroid_matching_counts():
    from tinyvision.detection import Detection, match_centroids
    from tinyvision.detection.metrics import CentroidScore

    centres = np.array([[12.0, 12.0], [40.0, 9.0], [60.0, 60.0]])
    classes = np.array([0, 1, 0])
    found = [Detection(0, 1, 1, 90),   # the object at cell (1, 1): TP
             Detection(0, 2, 1, 80),   # the same object again: FP
             Detection(1, 4, 1, 70),   # class 1 at cell (5, 1): one cell away, TP with tolerance 1
             Detection(1, 7, 7, 60)]   # class 1 where a class-0 object is: FP
    score, matched = match_centroids(found, centres, classes, stride=8)
    assert score == CentroidScore(2, 2, 1) and matched == [0, -1, 1, -1]
    assert (score.precision, score.recall) == (0.5, 2 / 3) and score.f1 == pytest.approx(4 / 7)
    strict, _ = match_centroids(found, centres, classes, stride=8, tolerance=0)
    assert strict == CentroidScore(1, 3, 2)
    empty, _ = match_centroids([], np.zeros((0, 2)), [], stride=8)
    assert empty.f1 == 1.0


def test_centroid_loss_down_weights_the_background():
    import tensorflow as tf

    from tinyvision.detection import centroid_loss

    y_true = np.zeros((1, 2, 2), np.int32)
    y_true[0, 0, 0] = 2
    y_pred = np.full((1, 2, 2, 3), 0.25, np.float32)
    y_pred[..., 0] = 0.5
    ce = -np.log(np.array([0.25, 0.5, 0.5, 0.5]))
    for weight in (1.0, 0.1):
        w = np.array([1.0, weight, weight, weight])
        got = float(centroid_loss(weight)(tf.constant(y_true), tf.constant(y_pred)))
        assert got == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)


# --- a tiny detector: QAT, int8, bundle, C++ decoder ------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, int8 .tflite path, bundle folder, val images, val samples) of a 64 px detector trained briefly."""
    from converters.quantize import to_int8_tflite
    from models import centroid_detector
    from tinyvision.data.detection import detection_arrays, detection_class_names
    from tinyvision.training import train

    root = tmp_path_factory.mktemp("detector")
    images, targets, _ = detection_arrays(64, RESOLUTION, seed=1)
    result = train(lambda: centroid_detector(resolution=RESOLUTION, hidden=8), (images, targets), epochs=1,
                   qat_epochs=1, batch_size=16, seed=0, verbose=0)
    tflite = root / "det.tflite"
    tflite.write_bytes(to_int8_tflite(result.model, images, labels=detection_class_names(), max_samples=16))
    bundle = root / "bundle"
    done = _cli("convert", f"--model={tflite}", "--patches=6:2x2", f"--output={bundle}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified: bit-exact with the source model on TFLM" in done.stdout
    val_images, _, val_samples = detection_arrays(8, RESOLUTION, seed=1, split="val")
    return root, tflite, bundle, val_images, val_samples


def test_bundle_heatmaps_and_detections_equal_the_int8_model(tiny):
    from tinyvision.bundle import read_bundle
    from tinyvision.detection.runtime import bundle_heatmaps, tflm_heatmaps

    _, tflite, bundle, images, _ = tiny
    whole = tflm_heatmaps(tflite.read_bytes(), images)
    split = bundle_heatmaps(read_bundle(str(bundle)), images)
    assert whole.values.shape == (8, 8, 8, 4) and whole.values.dtype == np.int8
    np.testing.assert_array_equal(whole.values, split.values)
    assert (whole.scale, whole.zero_point) == (split.scale, split.zero_point)
    assert whole.detections(0.3) == split.detections(0.3)


def test_evaluate_prints_centroid_f1_of_int8_and_bundle(tiny):
    _, tflite, bundle, _, _ = tiny
    done = _cli("evaluate", f"--model={tflite},{bundle}", "--dataset=builtin_detection", "--samples=8")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if len(line.split()) == 8}
    assert rows["det.tflite"][1] == "int8" and rows["bundle"][1] == "bundle"
    assert rows["det.tflite"][2:] == rows["bundle"][2:]  # precision, recall, F1, TP, FP, FN
    assert "bundle vs det.tflite: the same detections on every image" in done.stdout


def test_classifier_paths_refuse_a_detector(tiny):
    from converters.cli.classifier import open_classifier
    from tinyvision.errors import TinyVisionError

    with pytest.raises(TinyVisionError, match="is a centroid detector"):
        open_classifier(str(tiny[2]))


@pytest.mark.skipif(CXX is None, reason="no g++ on PATH: the host C++ tests need a C++17 compiler")
def test_device_decoder_matches_python(tiny, tmp_path):
    from tinyvision.detection import decode_centroids, quantize_threshold
    from tinyvision.detection.runtime import tflm_heatmaps

    exe = tmp_path / "centroid_check"
    cmd = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=all", os.path.join(APP, "centroid_decoder.cpp"),
           os.path.join(APP, "tests", "centroid_check.cpp"), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    def device(heatmaps, threshold, max_detections):
        heatmaps.astype(np.int8).tofile(tmp_path / "maps.bin")
        n, rows, cols, channels = heatmaps.shape
        out = subprocess.run([str(exe), str(tmp_path / "maps.bin"), str(n), str(rows), str(cols), str(channels),
                              str(threshold), str(max_detections)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        found, lines = [], out.stdout.splitlines()
        while lines:
            count = int(lines.pop(0).split()[2])
            found.append([tuple(int(v) for v in lines.pop(0).split()) for _ in range(count)])
        return found

    rng = np.random.default_rng(5)
    cases = [(rng.integers(-3, 3, (20, 6, 9, 3)), 0, 16),        # small range: many plateaus and ties
             (rng.integers(-128, 128, (20, 20, 20, 4)), 60, 16),  # full range, capped at 16 detections
             (rng.integers(-128, 128, (4, 1, 7, 2)), -128, 100)]  # a single row, every peak
    heatmaps = tflm_heatmaps(tiny[1].read_bytes(), tiny[3])
    cases.append((heatmaps.values, quantize_threshold(0.3, heatmaps.scale, heatmaps.zero_point), 16))
    for maps, threshold, cap in cases:
        maps = maps.astype(np.int8)
        want = [[(d.cls, d.x, d.y, d.score) for d in decode_centroids(m, threshold, cap)] for m in maps]
        assert device(maps, threshold, cap) == want
    for probability, scale, zero_point in ((0.5, 1 / 256, -128), (0.3, heatmaps.scale, heatmaps.zero_point),
                                           (0.71, 0.0123, 5)):
        out = subprocess.run([str(exe), "--threshold", repr(probability), repr(float(scale)), str(zero_point)],
                             capture_output=True, text=True, timeout=60)
        assert int(out.stdout) == quantize_threshold(probability, scale, zero_point)


LIB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "third_party", "Chirale_TensorFlowLite")


def _builds_32bit_programs(tmp_path):
    src = tmp_path / "probe.cpp"
    src.write_text("int main() { return 0; }\n")
    return subprocess.run([CXX, "-m32", str(src), "-o", str(tmp_path / "probe")], capture_output=True).returncode == 0


def test_sketch_prints_the_python_detections(tiny, tmp_path):
    """The exported sketch, built against the board's TFLM library on the host (32-bit, as the board's
    objects), prints one line per detection: the Python decoder's detections of the same heatmap."""
    if CXX is None or not os.path.isdir(LIB_DIR) or not _builds_32bit_programs(tmp_path):
        pytest.skip("needs g++ -m32 (g++-multilib) and the board's TFLM library at ../shared/third_party")
    from tinyvision.bundle import read_bundle
    from tinyvision.data.detection import render_detection_sample
    from tinyvision.detection import decode_centroids, quantize_threshold
    from tinyvision.runtime.board import run_bundle

    _, _, bundle, _, _ = tiny
    scene = render_detection_sample(3, RESOLUTION, split="test")
    result = run_bundle(bundle, ("host",), LIB_DIR, image=scene.image)["host"]
    assert result.score_diff == 0 and result.stage_mismatches == [0]
    split = read_bundle(str(bundle))
    tail = split.models[split.tail].graph().outputs[0].quantization
    scale, zero_point = float(tail.scale.reshape(-1)[0]), int(tail.zero_point.reshape(-1)[0])
    heatmap = result.host_scores.reshape(8, 8, 4)
    want = decode_centroids(heatmap, quantize_threshold(0.5, scale, zero_point), 16)
    assert want  # the sketch's threshold is 0.5: the scene must give it something to print
    lines = result.run.lines
    assert f"detections={len(want)} " in next(line for line in lines if line.startswith("detections="))
    got = [line.split() for line in lines if line.startswith("detection ")]
    assert [(int(g[1].split("=")[1]) - 1, int(g[3][2:]), int(g[4][2:])) for g in got] == \
        [(d.cls, d.x, d.y) for d in want]
