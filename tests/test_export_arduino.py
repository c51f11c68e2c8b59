"""converters.export.arduino: a bundle -> a complete Arduino sketch folder, or a clear refusal."""
import dataclasses
import os
import re

import numpy as np
import pytest

from tinyvision.errors import TinyVisionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tflm_app")


def write_small_cnn_bundle(folder, model, interpreters):
    from converters.patching import split_patch_stage, split_points, write_bundle
    from converters.patching.bundle import finalize

    write_bundle(finalize(split_patch_stage(model, split_points(model)[-1], 2), interpreters=interpreters), folder)
    return str(folder)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, small_cnn_tflite):
    """2x2 patches of the small CNN, one interpreter at a time (the converter's default)."""
    return write_small_cnn_bundle(tmp_path_factory.mktemp("bundle") / "small_cnn", small_cnn_tflite, "one_at_a_time")


@pytest.fixture(scope="module")
def resident_bundle_dir(tmp_path_factory, small_cnn_tflite):
    """The same split with every interpreter resident."""
    return write_small_cnn_bundle(tmp_path_factory.mktemp("bundle") / "small_cnn", small_cnn_tflite, "resident")


def flatbuffer_object(data):
    """What the flatbuffer object API reads from ``data``, written out again (equal for equal models)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(flatbuffer_utils.convert_bytearray_to_object(data)))


def c_array_bytes(text, name):
    body = re.search(re.escape(name) + r"\[\] = \{(.*?)\};", text, re.S).group(1)
    return bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".")]


def test_writes_a_complete_sketch(bundle_dir, tmp_path, capsys):
    from converters.export.arduino import (INTERPRETER_BYTES, RUNTIME_FILES, SKETCH_TEMPLATE, export_arduino,
                                           prepare_test_image)
    from converters.patching import read_bundle

    report = export_arduino(bundle_dir, tmp_path, class_names=["a", "b", "c", "d", "e"])
    sketch = report.sketch_dir
    assert sketch == os.path.join(str(tmp_path), "tinyvision_small_cnn")
    files = set(os.listdir(sketch))
    assert {"tinyvision_small_cnn.ino", "plan_data.h", "plan_data.cpp", "model_ops.h", "model_data.h",
            "test_image.h", "test_image.cpp", *RUNTIME_FILES} <= files
    with open(os.path.join(APP, SKETCH_TEMPLATE)) as f, open(os.path.join(sketch, "tinyvision_small_cnn.ino")) as g:
        assert f.read() == g.read()
    for name in RUNTIME_FILES:
        with open(os.path.join(APP, name)) as f, open(os.path.join(sketch, name)) as g:
            assert f.read() == g.read(), name

    bundle = read_bundle(bundle_dir)
    with open(os.path.join(sketch, "model_data.cpp")) as f:
        source = f.read()
    assert "alignas(16) const unsigned char kTinyVisionModels[]" in source
    image = c_array_bytes(source, "kTinyVisionModels")
    assert len(image) % 16 == 0 and len(image) < sum(len(m.data) for m in bundle.models)
    with open(os.path.join(sketch, "plan_data.cpp")) as f:
        starts = [int(o) for o in re.findall(r"kTinyVisionModels \+ (\d+)u, \d+u", f.read())]
    assert len(starts) == len(bundle.models)
    for m, start in zip(bundle.models, starts):  # each model reads from its start exactly as its file does
        assert start % 16 == 0
        assert flatbuffer_object(image[start:]) == flatbuffer_object(m.data)
    with open(os.path.join(sketch, "plan_data.h")) as f:
        header = f.read()
    assert f"kTinyVisionArenaSize = {bundle.arena['size']};" in header
    assert f"kTinyVisionNumModels = {len(bundle.models)};" in header
    assert "kTinyVisionNumInterpreterSlots = 1;" in header
    with open(os.path.join(sketch, "plan_data.cpp")) as f:
        plan = f.read()
    assert len(re.findall(r"^    \{\d+, 0, \{\d+u, \d+u, \d+u, \d+u\}", plan, re.M)) == len(bundle.patches)
    assert "kStages, 1," in plan
    assert f"tinyvision::InterpreterMode::kOneAtATime, {bundle.arena['temp_reserve']}u}}," in plan
    with open(os.path.join(sketch, "model_ops.h")) as f:
        ops = f.read()
    assert "r.AddConv2D()" in ops and "r.AddDepthwiseConv2D()" in ops and "r.AddFullyConnected()" in ops
    with open(os.path.join(sketch, "test_image.cpp")) as f:
        values = [int(v) for v in re.findall(r"-?\d+", f.read().split("{", 1)[1])]
    np.testing.assert_array_equal(values, prepare_test_image(bundle)[0].reshape(-1))

    assert report.interpreters == "one_at_a_time"
    assert report.ram["arena"] == bundle.arena["size"]
    assert report.ram["interpreters"] == INTERPRETER_BYTES  # one slot for all models
    assert report.ram_bytes == sum(report.ram.values()) <= report.ram_available == 256 * 1024 - 32 * 1024
    assert report.flash["models"] == len(image)
    assert report.flash_bytes == sum(report.flash.values()) <= report.flash_available
    assert report.camera_ram_bytes > report.ram_bytes + 160 * 120 * 2
    with open(os.path.join(sketch, "build_config.h")) as f:
        config = f.read()
    assert "#define TINYVISION_USE_CAMERA 0" in config and "#define TINYVISION_CAMERA_BUILD_FITS 1" in config
    printed = capsys.readouterr().out
    assert f"RAM   {report.ram_bytes:,} of" in printed and f"flash {report.flash_bytes:,} of" in printed
    assert leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def two_stage_bundle_dir(tmp_path_factory, small_cnn_tflite):
    """Two patch stages of the small CNN: 2x2 patches up to its first split point, then 2x3 patches of that
    stage buffer up to its last one; one interpreter at a time."""
    from converters.patching import split_points, split_stages, write_bundle
    from converters.patching.bundle import finalize

    points = split_points(small_cnn_tflite)
    bundle = split_stages(small_cnn_tflite, [(points[0], 2), (points[-1], (2, 3))])
    folder = tmp_path_factory.mktemp("bundle") / "two_stages"
    write_bundle(finalize(bundle, interpreters="one_at_a_time"), folder)
    return str(folder)


PATCH_LINE = re.compile(r"^    \{(\d+), (\d+), \{(\d+)u, (\d+)u, (\d+)u, (\d+)u\}, "
                        r"\{(\d+)u, (\d+)u, (\d+)u, (\d+)u, (\d+)u, (\d+)u\}(?:, (-?\d+))?\},$", re.M)
STAGE_LINE = re.compile(r"^    \{\{(\d+)u, (\d+)u, (\d+)u\}, \{(\S+)f, (-?\d+)\}, \{(\d+)u, (\d+)u\}\},$", re.M)


def test_two_stage_plan_data(two_stage_bundle_dir, tmp_path):
    """Every stage (shape, quantization, arena section) and every patch's stage index reach the C plan; the
    arena stays one block in the RAM accounting."""
    from converters.export.arduino import INTERPRETER_BYTES, export_arduino
    from converters.patching import read_bundle

    bundle = read_bundle(two_stage_bundle_dir)
    assert len(bundle.stages) == 2
    report = export_arduino(two_stage_bundle_dir, tmp_path, verbose=False)
    with open(os.path.join(report.sketch_dir, "plan_data.cpp")) as f:
        plan = f.read()
    stages = [(int(h), int(w), int(c), np.float32(scale), int(zp), int(offset), int(size))
              for h, w, c, scale, zp, offset, size in STAGE_LINE.findall(plan)]
    assert stages == [(*(int(d) for d in s["shape"]), np.float32(s["scale"]), int(s["zero_point"]),
                       a["offset"], a["size"]) for s, a in zip(bundle.stages, bundle.arena["stages"])]
    assert "kStages, 2," in plan
    # A patch's source (PatchInfo::source) follows only when plan.json gives one.
    patches = [tuple(int(v) if v else None for v in m) for m in PATCH_LINE.findall(plan)]
    assert patches == [(p.model, p.stage, p.window.x, p.window.y, p.window.w, p.window.h, p.output.x, p.output.y,
                        p.output.c, p.output.w, p.output.h, p.output.channels, p.source) for p in bundle.patches]
    assert [p[1] for p in patches] == sorted(p[1] for p in patches) and {p[1] for p in patches} == {0, 1}
    assert report.ram["arena"] == bundle.arena["size"]
    assert report.ram["interpreters"] == INTERPRETER_BYTES
    assert report.ram_bytes == sum(report.ram.values())


def test_stage_sections_must_match_the_stages(two_stage_bundle_dir):
    from converters.export.arduino import model_image, render_plan_data
    from converters.patching import read_bundle

    bundle = read_bundle(two_stage_bundle_dir)
    bundle.arena["stages"] = bundle.arena["stages"][:1]
    with pytest.raises(TinyVisionError, match="the arena has 1 stage sections for 2 stages"):
        render_plan_data(bundle, model_image(bundle))


def test_resident_interpreters_take_a_slot_and_a_section_each(bundle_dir, resident_bundle_dir, tmp_path):
    from converters.export.arduino import INTERPRETER_BYTES, export_arduino
    from converters.patching import read_bundle

    resident = export_arduino(resident_bundle_dir, tmp_path / "resident", verbose=False)
    one = export_arduino(bundle_dir, tmp_path / "one", verbose=False)
    bundle = read_bundle(resident_bundle_dir)
    n = len(bundle.models)
    with open(os.path.join(resident.sketch_dir, "plan_data.h")) as f:
        assert f"kTinyVisionNumInterpreterSlots = {n};" in f.read()
    with open(os.path.join(resident.sketch_dir, "plan_data.cpp")) as f:
        assert "tinyvision::InterpreterMode::kResident, 0u}," in f.read()
    assert resident.interpreters == "resident" and one.interpreters == "one_at_a_time"
    assert resident.ram["interpreters"] == n * INTERPRETER_BYTES
    assert resident.ram["arena"] == bundle.arena["size"]
    # One persistent slot instead of n sections, one interpreter object instead of n.
    assert one.ram_bytes < resident.ram_bytes


def test_unknown_interpreter_mode(bundle_dir):
    from converters.export.arduino import render_plan_data
    from converters.patching import read_bundle

    bundle = read_bundle(bundle_dir)
    bundle.arena["interpreters"] = "sometimes"
    with pytest.raises(TinyVisionError, match="unknown arena.interpreters 'sometimes'"):
        render_plan_data(bundle, [f"m{i}" for i in range(len(bundle.models))])


def test_built_in_test_image_and_class_names(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino

    sketch = export_arduino(bundle_dir, tmp_path, verbose=False).sketch_dir
    with open(os.path.join(sketch, "plan_data.cpp")) as f:
        plan = f.read()
    # The small CNN has 5 classes: the built-in "shapes" dataset's first five names, and label 1 of sample 1.
    assert '"circle",\n    "square",\n    "triangle",\n    "cross",\n    "ring",' in plan
    with open(os.path.join(sketch, "test_image.h")) as f:
        assert "kTinyVisionTestLabel = 1;" in f.read()


def test_given_test_images(bundle_dir, tmp_path):
    import tensorflow as tf

    from converters.export.arduino import pixels_to_image, prepare_test_image
    from converters.patching import read_bundle

    bundle = read_bundle(bundle_dir)
    shape, scale, zp = tuple(bundle.image["shape"]), bundle.image["scale"], bundle.image["zero_point"]
    pixels = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    image, label, names = prepare_test_image(bundle, pixels)
    np.testing.assert_array_equal(image, pixels_to_image(pixels, shape, scale, zp))
    assert image.shape == shape and label == -1 and names is None

    png = tmp_path / "photo.png"
    png.write_bytes(tf.io.encode_png(pixels).numpy())
    np.testing.assert_array_equal(prepare_test_image(bundle, str(png))[0], image)

    quantized = np.full(shape, 7, np.int8)
    np.testing.assert_array_equal(prepare_test_image(bundle, quantized)[0], quantized)
    with pytest.raises(TinyVisionError, match="int8 test image must be"):
        prepare_test_image(bundle, np.zeros((3, 3, 3), np.int8))
    with pytest.raises(TinyVisionError, match="uint8"):
        prepare_test_image(bundle, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TinyVisionError, match="not a decodable image"):
        (tmp_path / "junk.png").write_bytes(b"not an image")
        prepare_test_image(bundle, str(tmp_path / "junk.png"))


def test_refuses_a_bundle_over_the_board_ram(bundle_dir, tmp_path):
    """A board with 1 KB less RAM than the bundle needs. (A plan.json that claims a larger arena than its
    models need is a tampered plan: ``read_bundle`` re-derives arena.size and refuses it.)"""
    from converters.export.arduino import export_arduino
    from converters.export.boards import BOARDS

    nano = BOARDS["nano33ble"]
    needed = export_arduino(bundle_dir, tmp_path / "probe", verbose=False).ram_bytes
    small = dataclasses.replace(nano, ram_bytes=nano.reserved_ram_bytes + needed - 1024)
    available = f"{small.ram_available:,}"
    out = tmp_path / "out"
    with pytest.raises(TinyVisionError, match=rf"does not fit nano33ble: static RAM .* > {available} B"):
        export_arduino(bundle_dir, out, board=small, verbose=False)
    assert not out.exists()  # nothing written: no sketch, no temporary folder, not even the output folder
    out.mkdir()
    with pytest.raises(TinyVisionError, match=r"does not fit nano33ble"):
        export_arduino(bundle_dir, out, board=small, verbose=False)
    assert os.listdir(out) == []  # an existing output folder stays, empty


def compiles(header_dir, *defines):
    """Whether a file including build_config.h compiles with g++ (its #error is the point)."""
    import subprocess

    source = os.path.join(header_dir, "uses_config.cpp")
    with open(source, "w") as f:
        f.write('#include "build_config.h"\nint main() { return TINYVISION_USE_CAMERA; }\n')
    result = subprocess.run(["g++", "-fsyntax-only", *defines, "-I", header_dir, source], capture_output=True,
                            text=True)
    return result.returncode == 0, result.stderr


def test_camera_build_over_the_board_ram(bundle_dir, tmp_path):
    """A board where the test image build fits and the camera build (+ a 38 KB frame) does not: the default
    export works and its build_config.h stops a camera build at compile time; --camera is refused."""
    from converters.export.arduino import export_arduino
    from converters.export.boards import BOARDS

    nano = BOARDS["nano33ble"]
    needed = export_arduino(bundle_dir, tmp_path / "probe", verbose=False).ram_bytes
    tight = dataclasses.replace(nano, ram_bytes=nano.reserved_ram_bytes + needed + 1024)
    report = export_arduino(bundle_dir, tmp_path / "flash_image", board=tight, verbose=False)
    assert not report.camera and not report.camera_fits
    assert report.ram_bytes <= report.ram_available < report.camera_ram_bytes
    assert compiles(report.sketch_dir) == (True, "")
    ok, errors = compiles(report.sketch_dir, "-DTINYVISION_USE_CAMERA=1")
    assert not ok and f"the camera build needs {report.camera_ram_bytes} B of static RAM" in errors

    out = tmp_path / "camera"
    with pytest.raises(TinyVisionError, match=r"does not fit nano33ble: the camera build's static RAM"):
        export_arduino(bundle_dir, out, board=tight, camera=True, verbose=False)
    assert not out.exists()

    camera = export_arduino(bundle_dir, tmp_path / "camera_ok", camera=True, verbose=False)
    assert camera.camera and camera.camera_fits
    with open(os.path.join(camera.sketch_dir, "build_config.h")) as f:
        assert "#define TINYVISION_USE_CAMERA 1" in f.read()
    assert compiles(camera.sketch_dir) == (True, "")


def test_refuses_a_bundle_over_the_board_flash(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino
    from converters.export.boards import BOARDS

    tiny = dataclasses.replace(BOARDS["nano33ble"], flash_bytes=210 * 1024)
    with pytest.raises(TinyVisionError, match=r"does not fit nano33ble: flash .* > 215,040 B"):
        export_arduino(bundle_dir, tmp_path, board=tiny, verbose=False)
    assert os.listdir(tmp_path) == []


def test_estimates_code_size_without_the_arm_toolchain(bundle_dir, tmp_path, monkeypatch):
    from converters.export.arduino import export_arduino

    monkeypatch.setenv("PATH", str(tmp_path))  # no arm-none-eabi-* here
    report = export_arduino(bundle_dir, tmp_path / "out", verbose=False)
    assert report.arm_size is None
    assert "runtime (estimate)" in report.flash and "test image" in report.flash


def test_replaces_its_own_sketch_but_nothing_else(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino

    first = export_arduino(bundle_dir, tmp_path, sketch_name="demo", verbose=False).sketch_dir
    with open(os.path.join(first, "stale.txt"), "w") as f:
        f.write("from an older export")
    second = export_arduino(bundle_dir, tmp_path, sketch_name="demo", verbose=False).sketch_dir
    assert second == first and not os.path.exists(os.path.join(second, "stale.txt"))
    assert os.path.isfile(os.path.join(second, "demo.ino"))

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(TinyVisionError, match="not a tinyvision sketch"):
        export_arduino(bundle_dir, tmp_path, sketch_name="notes", verbose=False)
    assert (foreign / "todo.txt").read_text() == "mine"
    assert leftovers(tmp_path) == []


def test_argument_errors(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino

    with pytest.raises(TinyVisionError, match="unknown board 'uno'; known boards: mps2-an386, nano33ble"):
        export_arduino(bundle_dir, tmp_path, board="uno")
    with pytest.raises(TinyVisionError, match="sketch name"):
        export_arduino(bundle_dir, tmp_path, sketch_name="bad name")
    with pytest.raises(TinyVisionError, match="2 class names given, the model has 5 outputs"):
        export_arduino(bundle_dir, tmp_path, class_names=["x", "y"])
    with pytest.raises(TinyVisionError, match="plan.json"):
        export_arduino(tmp_path, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


@pytest.fixture(scope="module")
def two_output_tflite(tmp_path_factory):
    """A plain int8 .tflite with two outputs (``conftest.two_output_cnn``: 16x16x6 and 8x8x6), exported whole."""
    from conftest import two_output_cnn

    path = tmp_path_factory.mktemp("model") / "two_scales.tflite"
    path.write_bytes(two_output_cnn(6, hidden=8, samples=2))
    return str(path)


OUTPUT_LINE = re.compile(r"^    \{(\d), \{([\du, ]+)\}\},  // model (\d+) output (\d+)$", re.M)
MODEL_OUTPUTS = re.compile(r"kTinyVisionModels \+ \d+u, \d+u, tinyvision::ModelRole::k\w+, \{[^}]*\}\}, "
                           r"kOutputs \+ (\d+), (\d+),")


def plan_outputs(plan_source):
    """Per model of a generated plan_data.cpp, its output shapes as the C tables hold them."""
    table = [tuple(int(d.strip().rstrip("u")) for d in dims.split(",")) for _, dims, _, _ in
             OUTPUT_LINE.findall(plan_source)]
    return [table[int(first):int(first) + int(count)] for first, count in MODEL_OUTPUTS.findall(plan_source)]


def test_plan_lists_every_model_output(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino
    from converters.patching import read_bundle

    sketch = export_arduino(bundle_dir, tmp_path, verbose=False).sketch_dir
    with open(os.path.join(sketch, "plan_data.cpp")) as f:
        outputs = plan_outputs(f.read())
    assert outputs == [[tuple(m.output_shape)] for m in read_bundle(bundle_dir).models]


def test_a_tail_with_several_outputs(two_output_tflite, tmp_path):
    """The plan lists both outputs in the model's order; no class names or test label (refused when given); the
    sketch's README describes the output lines; a box coding does not make it a box detector."""
    from converters.export.arduino import (BOX_FILES, decodes_boxes, export_arduino, load_for_export,
                                           render_box_config, render_sketch)

    bundle = load_for_export(two_output_tflite)
    shapes = bundle.models[bundle.tail].output_shapes
    assert sorted(shapes) == [(8, 8, 6), (16, 16, 6)]
    report = export_arduino(two_output_tflite, tmp_path, verbose=False)
    with open(os.path.join(report.sketch_dir, "plan_data.cpp")) as f:
        plan = f.read()
    assert plan_outputs(plan) == [list(shapes)]
    with open(os.path.join(report.sketch_dir, "plan_data.h")) as f:
        assert "kTinyVisionNumClassNames = 0;" in f.read()
    with open(os.path.join(report.sketch_dir, "test_image.h")) as f:
        assert "kTinyVisionTestLabel = -1;" in f.read()
    with open(os.path.join(report.sketch_dir, "README.md")) as f:
        readme = f.read()
    assert "Classes: none (the model has 2 outputs)." in readme and "`output=<i> shape=<h>x<w>x<c>" in readme

    with pytest.raises(TinyVisionError, match="^class names given for a model with 2 outputs: class names and test "
                                              "labels apply to a single-output model only$"):
        export_arduino(two_output_tflite, tmp_path / "named", class_names=["a", "b"], verbose=False)
    with pytest.raises(TinyVisionError, match="^a test label given for a model with 2 outputs"):
        export_arduino(two_output_tflite, tmp_path / "labelled", test_label=0, verbose=False)
    assert not os.path.exists(tmp_path / "named") and not os.path.exists(tmp_path / "labelled")

    bundle.box_coding = {"anchors": [[8.0, 8.0]], "classes": 1, "stride": 4}  # 6 channels: one anchor, one class
    assert not decodes_boxes(bundle)
    assert "#define TINYVISION_BOX_DETECTOR 0" in render_box_config(bundle)
    image = np.zeros((32, 32, 3), np.int8)
    assert not set(BOX_FILES) & set(render_sketch(bundle, "boxes", image, -1, []))
