"""Box detectors through the command line: a tiny YOLO-style detector built, trained (QAT) on the built-in
scenes and on VOC / COCO / TFRecord datasets written by the tests, converted to int8 and to a patch bundle with
its anchors and coding carried along, evaluated (VOC and COCO mAP per form), asked for predictions, and run as
the exported Arduino sketch on the host and the emulated Cortex-M4, which prints the Python decoder's boxes."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOLUTION = 64  # a 4 x 4 grid at stride 16
LIB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "third_party", "Chirale_TensorFlowLite")


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "converters.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _ok(done):
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, float .keras, QAT .h5, int8 .tflite, bundle folder, train's stdout) of a 64 px box detector."""
    root = tmp_path_factory.mktemp("boxes")
    keras, qat, tflite, bundle = root / "box.keras", root / "box_qat.h5", root / "box.tflite", root / "bundle"
    _ok(_cli("build", "--model=yolo_mobilenet_v2_0.35_224", f"--resolution={RESOLUTION}", f"--output={keras}"))
    trained = _ok(_cli("train", f"--model={keras}", "--dataset=builtin_detection", "--samples=32", "--epochs=1",
                       "--batch_size=16", "--learning_rate=0.005", f"--output={qat}"))
    _ok(_cli("convert", f"--model={qat}", "--dataset=builtin_detection", "--calibration_samples=8",
             f"--output={tflite}"))
    assert "verified: bit-exact" in _ok(_cli("convert", f"--model={tflite}", "--patches=6:2x2",
                                             f"--output={bundle}"))
    return root, keras, qat, tflite, bundle, trained


def _coding_of(keras):
    from converters.cli.common import keras_box_coding, load_keras

    return keras_box_coding(load_keras(str(keras)), str(keras))


def test_train_prints_float_and_qat_map_and_keeps_the_coding(tiny):
    from tinyvision.detection import BoxCoding
    from tinyvision.detection.anchors import procedural_anchors

    _, keras, qat, _, _, trained = tiny
    assert "float mAP@0.5 " in trained and "QAT mAP@0.5 " in trained
    coding = _coding_of(keras)
    assert coding == BoxCoding(procedural_anchors(3, RESOLUTION), 3, 16)
    assert _coding_of(qat) == coding  # the QAT model has lost its BoxHead: the .h5 carries the coding


def test_coding_round_trips_through_tflite_metadata_and_plan(tiny, tmp_path):
    from converters.quantize import attach_metadata, read_metadata
    from tinyvision.bundle import read_bundle
    from tinyvision.bundle.schema import check_plan_fields
    from tinyvision.detection import BoxCoding
    from tinyvision.errors import TinyVisionError

    _, keras, _, tflite, bundle, _ = tiny
    coding = _coding_of(keras)
    meta = read_metadata(tflite.read_bytes())
    assert meta["box_coding"] == coding and meta["labels"] == ["circle", "square", "triangle"]
    split = read_bundle(str(bundle))
    assert BoxCoding.from_dict(split.box_coding) == coding and split.labels == meta["labels"]
    odd = BoxCoding([[3.25, 7.0]], classes=2, stride=8)
    again = read_metadata(attach_metadata(tflite.read_bytes(), "m", labels=["a", "b"], box_coding=odd))
    assert again["box_coding"] == odd and again["labels"] == ["a", "b"]
    with pytest.raises(TinyVisionError, match="2 labels given for a model with 3 classes"):
        attach_metadata(tflite.read_bytes(), "m", labels=["a", "b"], box_coding=coding)
    plan = split.plan()
    for bad in ({"anchors": [], "classes": 3, "stride": 16}, {"anchors": [[1.0, 2.0]], "classes": 0, "stride": 16}):
        with pytest.raises(TinyVisionError, match="box_coding"):
            check_plan_fields({**plan, "box_coding": bad})


def _table(stdout):
    """{model name: [form, mAP@0.5, mAP@.5:.95, boxes]} of evaluate's box table."""
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if len(line.split()) == 5}


def test_evaluate_reports_both_maps_and_that_int8_and_bundle_agree(tiny):
    from converters.cli.box_data import box_dataset, mean_average_precisions
    from converters.cli.classifier import open_model

    _, _, qat, tflite, bundle, _ = tiny
    out = _ok(_cli("evaluate", f"--model={qat},{tflite},{bundle}", "--dataset=builtin_detection", "--samples=8"))
    rows = _table(out)
    assert [rows[n][0] for n in ("box_qat.h5", "box.tflite", "bundle")] == ["float", "int8", "bundle"]
    assert rows["box.tflite"][1:] == rows["bundle"][1:]
    assert "bundle vs box.tflite: the same detections on every image" in out
    images, records, _ = box_dataset("builtin_detection", RESOLUTION, "val", 8)
    voc, coco = mean_average_precisions(open_model(str(tflite)).detections(images, 0.05), records)
    assert rows["box.tflite"][1:3] == [f"{voc:.4f}", f"{coco:.4f}"]


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """{spec: dataset spec} of the same 12 scenes (96 x 80 px: letterboxed to the model) as VOC, COCO and TFRecord."""
    from tinyvision.data.detection import DETECTION_CLASSES, detection_samples
    from tinyvision.data.detection_augment import crop
    from tinyvision.data.detection_writers import write_coco, write_tfrecord, write_voc

    root = tmp_path_factory.mktemp("formats")
    samples = [crop(s, 0, 8, 96, 80) for s in detection_samples(12, 96, seed=3)]
    write_voc(samples, DETECTION_CLASSES, root / "voc")
    write_coco(samples, DETECTION_CLASSES, root / "coco.json", root / "coco_images")
    write_tfrecord(samples, DETECTION_CLASSES, root / "scenes.tfrecord")
    return {"voc": f"voc:{root / 'voc'}", "coco": f"coco:{root / 'coco.json'}:{root / 'coco_images'}",
            "tfrecord": f"tfrecord:{root / 'scenes.tfrecord'}"}


def test_the_formats_give_the_same_letterboxed_boxes(formats):
    from converters.cli.box_data import box_dataset

    loaded = {kind: box_dataset(spec, RESOLUTION, "val", validation_split=0.25) for kind, spec in formats.items()}
    images, records, names = loaded["coco"]
    assert images.shape == (3, RESOLUTION, RESOLUTION, 3) and names == ["circle", "square", "triangle"]
    for kind in ("voc", "tfrecord"):
        np.testing.assert_array_equal(loaded[kind][0], images)
        for got, want in zip(loaded[kind][1], records):
            np.testing.assert_array_equal(got.classes, want.classes)
            # VOC stores whole pixels (rounded at 96 x 80, then scaled by 64 / 96); TFRecord normalised floats.
            np.testing.assert_allclose(got.boxes, want.boxes, atol=0.34 if kind == "voc" else 1e-3)


@pytest.mark.parametrize("kind", ["voc", "coco", "tfrecord"])
def test_train_and_evaluate_on_each_format(tiny, formats, kind):
    root, keras, _, tflite, _, _ = tiny
    out = root / f"from_{kind}.keras"
    trained = _ok(_cli("train", f"--model={keras}", f"--dataset={formats[kind]}", "--validation_split=0.25",
                       "--epochs=1", "--noqat", "--batch_size=8", f"--output={out}"))
    assert "training on 9 images" in trained and "float mAP@0.5 " in trained and "QAT" not in trained
    assert _coding_of(out) == _coding_of(keras)
    rows = _table(_ok(_cli("evaluate", f"--model={tflite}", f"--dataset={formats[kind]}", "--validation_split=0")))
    assert rows["box.tflite"][0] == "int8"


def test_predict_prints_one_line_per_box_in_the_files_pixels(tiny, tmp_path):
    import tensorflow as tf

    from converters.cli.classifier import open_model
    from tinyvision.data.detection import render_detection_sample
    from tinyvision.data.loaders import decode_image_file

    _, _, _, _, bundle, _ = tiny
    scene = tmp_path / "scene.png"  # 80 wide, 96 high: the model sees rows 8 .. 88, scaled by 64 / 80
    scene.write_bytes(tf.io.encode_png(render_detection_sample(3, 96, split="test").image[:, 8:88]).numpy())
    lines = _ok(_cli("predict", f"--model={bundle}", f"--image={scene}", "--threshold=0.05")).splitlines()
    detector = open_model(str(bundle))
    (found,) = detector.detections(decode_image_file(str(scene), RESOLUTION)[None], 0.05)
    assert found and lines[0] == f"{scene}: {len(found)} box(es) at threshold 0.05"
    scale = 80 / RESOLUTION
    assert lines[1:] == [f"  {detector.labels[d.cls]} {d.box[0] * scale:.1f} {d.box[1] * scale + 8:.1f} "
                         f"{d.box[2] * scale:.1f} {d.box[3] * scale + 8:.1f} score {d.score:.3f}" for d in found]


def test_bad_input_gets_one_clear_line(tiny, formats, tmp_path):
    import tensorflow as tf

    import h5py

    root, keras, qat, tflite, _, _ = tiny
    stripped = tmp_path / "no_anchors.h5"  # a QAT box detector saved without the coding train stores
    shutil.copyfile(qat, stripped)
    with h5py.File(stripped, "a") as f:
        del f.attrs["tinyvision_box_coding"]
    inputs = tf.keras.Input((RESOLUTION, RESOLUTION, 3))
    classifier = root / "classifier.keras"
    tf.keras.Model(inputs, tf.keras.layers.Dense(3)(tf.keras.layers.GlobalAveragePooling2D()(inputs))).save(
        classifier)
    cases = [
        (("train", f"--model={classifier}", f"--dataset={formats['voc']}"), "holds boxes: it is for box detectors"),
        (("train", f"--model={classifier}", "--dataset=builtin_detection"), "cannot train on builtin_detection"),
        (("train", f"--model={keras}", "--dataset=builtin"), "is a box detector: it trains on box data"),
        (("evaluate", f"--model={tflite}", "--dataset=builtin_vww"), "box detectors are evaluated on box data"),
        (("evaluate", f"--model={tflite},{classifier}", "--dataset=builtin_detection"), "is not a box detector"),
        (("convert", f"--model={keras}", "--dataset=builtin", f"--output={tmp_path / 'x.tflite'}"),
         "calibrate it on box data"),
        (("evaluate", f"--model={stripped}", "--dataset=builtin_detection"), "is a box detector (its output is a "
         "BoxHead's) without its anchors"),
    ]
    for args, message in cases:
        done = _cli(*args, f"--output={tmp_path / 'out.h5'}") if args[0] == "train" else _cli(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        # TensorFlow's own start-up log lines may precede it on stderr; ours is the one "error:" line.
        (error,) = [line for line in done.stderr.splitlines() if "error:" in line]
        assert error.startswith("error: ") and message in error, done.stderr[-2000:]


def _builds_32bit_programs(tmp_path):
    cxx = shutil.which("g++")
    src = tmp_path / "probe.cpp"
    src.write_text("int main() { return 0; }\n")
    return cxx is not None and subprocess.run([cxx, "-m32", str(src), "-o", str(tmp_path / "probe")],
                                              capture_output=True).returncode == 0


def test_sketch_prints_the_python_boxes(tiny, tmp_path):
    """The exported sketch, built against the board's TFLM library for the host (32-bit) and for the Cortex-M4
    (qemu), prints one line per box: the Python decoder's boxes of the same output, at the sketch's thresholds."""
    if not os.path.isdir(LIB_DIR) or not _builds_32bit_programs(tmp_path):
        pytest.skip("needs g++ -m32 (g++-multilib) and the board's TFLM library at ../shared/third_party")
    from converters.export.arduino import BOX_IOU_THRESHOLD, BOX_SCORE_THRESHOLD
    from tinyvision.bundle import read_bundle
    from tinyvision.data.detection import render_detection_sample
    from tinyvision.runtime.board import run_bundle

    _, keras, _, _, bundle, _ = tiny
    targets = ("host", "cortex-m4") if shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-g++") else (
        "host",)
    results = run_bundle(bundle, targets, LIB_DIR, image=render_detection_sample(3, RESOLUTION, split="test").image)
    split = read_bundle(str(bundle))
    tail = split.models[split.tail].graph().outputs[0].quantization
    output = results["host"].host_scores.reshape(4, 4, -1)
    want = _coding_of(keras).decode(output, BOX_SCORE_THRESHOLD, BOX_IOU_THRESHOLD, scale=float(tail.scale[0]),
                                    zero_point=int(tail.zero_point[0]))
    assert want  # the scene must give the sketch something to print
    for target, result in results.items():
        assert result.score_diff == 0, target
        lines = result.run.lines
        assert next(line for line in lines if line.startswith("detections=")).startswith(f"detections={len(want)} ")
        got = [line.split() for line in lines if line.startswith("detection ")]
        assert [(int(g[1].split("=")[1]), g[2]) for g in got] == [(d.cls, f"({split.labels[d.cls]})") for d in want]
        boxes = np.array([[float(v) for v in g[3][len("box="):].split(",")] for g in got])
        np.testing.assert_allclose(boxes, [d.box for d in want], atol=0.005 + 1e-5)  # printed with 2 decimals
        np.testing.assert_allclose([float(g[4][len("score="):]) for g in got], [d.score for d in want], atol=5e-4 + 1e-6)
