"""A centroid detector others trained, end to end: OpenMV's built-in face detector, an Edge Impulse FOMO model
(../shared/models/fomo_face_detection.tflite: MobileNetV2 0.35 to stride 8, 96 x 96 x 3 int8 in, a softmax
heatmap 12 x 12 x 2 out with the background first, no TFLite metadata).

tinyvision must see a centroid detector in it, feed it pixels as its trainers did (p - 128 in int8, not
tinyvision's own [-1, 1]), split it into a bundle bit-exact on TFLM whose centroids are the model's, and run
predict, evaluate and export on it (the sketch prints the bundle's centroids); a damaged copy gets one line and a
non-zero exit.
Skipped when ../shared/models is absent (a user's checkout).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(os.path.dirname(ROOT), "shared", "models")
MODEL = os.path.join(MODELS, "fomo_face_detection.tflite")
LABELS = os.path.join(MODELS, "fomo_face_detection.txt")
STOCK_ARENA = 239_952  # TFLM's own total for the unsplit model (../shared/models/README.md)

pytestmark = pytest.mark.skipif(not os.path.isfile(MODEL), reason="../shared/models/fomo_face_detection.tflite "
                                                                  "is absent")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _drawn_faces(seed):
    """uint8 [96, 96, 3]: two cartoon faces (skin-coloured ovals, eyes, a mouth) on a plain background, which the
    detector finds; the built-in shapes give it nothing to detect."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(2):
        x, y, r = (int(v) for v in (rng.integers(20, 76), rng.integers(20, 76), rng.integers(10, 18)))
        draw.ellipse([x - r, y - 1.25 * r, x + r, y + 1.25 * r], fill=(224, 172, 140))
        for side in (-1, 1):
            draw.ellipse([x + side * 0.4 * r - 2, y - 0.3 * r - 2, x + side * 0.4 * r + 2, y - 0.3 * r + 2],
                         fill=(30, 30, 30))
        draw.line([x - 0.4 * r, y + 0.5 * r, x + 0.4 * r, y + 0.5 * r], fill=(120, 40, 40), width=2)
    return np.asarray(image)


@pytest.fixture(scope="module")
def faces():
    """uint8 pixels [6, 96, 96, 3] of drawn faces."""
    return np.stack([_drawn_faces(seed) for seed in range(6)])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle of the model in an explicit two-stage chain, as convert writes it (checked bit-exact there)."""
    folder = tmp_path_factory.mktemp("fomo") / "bundle"
    done = _cli("convert", f"--model={MODEL}", "--patches=3:2x2,14:3x3", f"--output={folder}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified: bit-exact with the source model on TFLM" in done.stdout
    return folder


def test_it_is_a_centroid_detector_fed_its_own_pixels(faces):
    """Found a Detector by its output (a 12 x 12 grid, face + background); its heatmaps are TFLM's on the int8
    image p - 128 that Edge Impulse and OpenMV feed it, where tinyvision's own [-1, 1] would clip every
    pixel below 128 to black."""
    from converters.cli.classifier import open_model
    from tinyvision.data.normalization import normalize
    from tinyvision.detection.runtime import Detector
    from tinyvision.runtime import tflm

    detector = open_model(MODEL)
    assert isinstance(detector, Detector)
    assert (detector.input_shape, detector.grid, detector.num_classes, detector.stride) == ((96, 96, 3), (12, 12),
                                                                                            2, 8)
    got = detector.heatmaps(normalize(faces))
    data = open(MODEL, "rb").read()
    for pixels, heatmap in zip(faces, got.values):
        (want,) = tflm.run(data, [(pixels.astype(np.int16) - 128).astype(np.int8)[None]])
        np.testing.assert_array_equal(heatmap, want[0])
    assert (got.scale, got.zero_point) == (1 / 256, -128)
    assert all(len(found) for found in got.detections(0.5)[:2])  # the drawn faces are found


def test_bundle_is_bit_exact_and_finds_the_same_centroids(bundle, faces):
    from converters.cli.classifier import open_model
    from tinyvision.bundle import read_bundle
    from tinyvision.data.normalization import normalize
    from tinyvision.runtime.patch_runner import verify_bundle

    split = read_bundle(str(bundle))
    assert split.pixel_normalization == pytest.approx((0.0, 255.0))  # carried in plan.json for what reads it
    check = verify_bundle(split, open(MODEL, "rb").read(), n_inputs=2, seed=3)
    assert check.ok, check.detail
    images = normalize(faces)
    whole, patched = open_model(MODEL).heatmaps(images), open_model(str(bundle)).heatmaps(images)
    np.testing.assert_array_equal(whole.values, patched.values)
    found = whole.detections(0.3)
    assert sum(map(len, found)) >= len(faces)  # not vacuous: most drawn faces are found
    assert patched.detections(0.3) == found


def test_auto_split_fits_the_nano_far_below_the_stock_arena(tmp_path):
    folder = tmp_path / "auto"
    done = _cli("convert", f"--model={MODEL}", "--patches=auto", f"--output={folder}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "verified: bit-exact with the source model on TFLM" in done.stdout
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["kind"] == "patch_stage" and plan["arena"]["size"] < STOCK_ARENA // 4
    assert plan["stats"]["mac_overhead"] <= 0.15  # convert's default --max_mac_overhead


def test_predict_prints_the_detections_with_the_labels_file(tmp_path, faces):
    from PIL import Image

    from converters.cli.classifier import open_model
    from tinyvision.data.normalization import normalize

    image = tmp_path / "faces.png"
    Image.fromarray(faces[0]).save(image)
    done = _cli("predict", f"--model={MODEL}", f"--image={image}", f"--labels={LABELS}")
    assert done.returncode == 0, done.stderr[-2000:]
    (want,) = open_model(MODEL).heatmaps(normalize(faces[:1])).detections(0.5)
    assert f"{len(want)} detection(s) at threshold 0.5" in done.stdout
    got = [line.split() for line in done.stdout.splitlines() if line.startswith("  face cell")]
    assert [(int(g[2][2:]), int(g[3][2:])) for g in got] == [(d.x, d.y) for d in want] and want


def test_evaluate_scores_it_class_agnostic_on_the_builtin_scenes(bundle):
    done = _cli("evaluate", f"--model={MODEL},{bundle}", "--dataset=builtin_detection", "--samples=16")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored class-agnostic" in done.stdout
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if len(line.split()) == 8}
    assert rows["fomo_face_detection.tflite"][2:] == rows["bundle"][2:]
    assert "bundle vs fomo_face_detection.tflite: the same detections on every image" in done.stdout


def test_the_sketch_gets_the_model_pixels(bundle, tmp_path, faces):
    """export --arduino: the test image in flash and the camera's pixel table give the model p - 128."""
    from converters.export.arduino import export_arduino, load_for_export, prepare_test_image

    expected = (faces[0].astype(np.int16) - 128).astype(np.int8)
    for source in (MODEL, str(bundle)):
        image, _, _ = prepare_test_image(load_for_export(source), faces[0])
        np.testing.assert_array_equal(image, expected)
    report = export_arduino(str(bundle), tmp_path, test_image=faces[0], verbose=False)
    header = open(os.path.join(report.sketch_dir, "plan_data.h")).read()
    assert "kTinyVisionPixelMean = 0.0f;" in header and "kTinyVisionPixelStd = 254.99998" in header


@pytest.mark.parametrize("damage, commands", [
    ("truncated", (["analyze"], ["convert", "--patches=auto", "--output={out}"], ["predict", "--image=x.png"],
                   ["evaluate", "--dataset=builtin_detection", "--samples=4"])),
    ("identifier", (["analyze"], ["convert", "--patches=auto", "--output={out}"])),
])
def test_a_damaged_copy_gets_one_line(tmp_path, damage, commands):
    data = bytearray(open(MODEL, "rb").read())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[4:8] = b"XXXX"
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    for command in ([arg.format(out=tmp_path / "out") for arg in c] for c in commands):
        done = _cli(*command, f"--model={broken}")
        assert done.returncode != 0, command
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert lines[-1].startswith("error: ") and "broken.tflite" in lines[-1], (command, lines)
        assert "Traceback" not in done.stderr, command
    assert not (tmp_path / "out").exists()


LIB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "third_party", "Chirale_TensorFlowLite")


def test_the_sketch_prints_the_bundle_centroids(bundle, tmp_path, faces):
    """export --arduino's sketch, built against the board's TFLM library on the host (32-bit), prints the
    centroids the Python decoder finds in the host PatchRunner's heatmap of the same test image."""
    from test_detection import CXX, _builds_32bit_programs

    if CXX is None or not os.path.isdir(LIB_DIR) or not _builds_32bit_programs(tmp_path):
        pytest.skip("needs g++ -m32 (g++-multilib) and the board's TFLM library at ../shared/third_party")
    from tinyvision.detection import decode_centroids, quantize_threshold
    from tinyvision.runtime.board import run_bundle

    result = run_bundle(bundle, ("host",), LIB_DIR, image=faces[0])["host"]
    assert result.score_diff == 0 and not any(result.stage_mismatches)
    want = decode_centroids(result.host_scores.reshape(12, 12, 2), quantize_threshold(0.5, 1 / 256, -128), 16)
    assert want  # the sketch's threshold is 0.5: the drawn faces must give it something to print
    lines = result.run.lines
    assert f"detections={len(want)} " in next(line for line in lines if line.startswith("detections="))
    got = [line.split() for line in lines if line.startswith("detection ")]
    assert [(int(g[1].split("=")[1]) - 1, int(g[2][2:]), int(g[3][2:])) for g in got] == \
        [(d.cls, d.x, d.y) for d in want]
