"""The device runtime's plain C++ (tflm_app/) on the host, against Python.

- Real bundles (converters.patching, TFLM on the host), one-stage and two-stage, exported
  as sketches in both arena modes ("resident", "one_at_a_time"): the sketch's own
  plan_data.cpp, model arrays and test image, compiled with g++ and run in an arena of the
  plan's size, copy every window (stage 1's from the stage-0 buffer the C++ side assembled
  itself) and place every patch output exactly as the host ``PatchRunner`` does
  (byte-identical buffers, stage by stage), and the compiled plan carries the stages, arena
  mode, temp_reserve and interpreter slots.
- A plan written from Python with channel offsets and a padded stage section, resident
  and with one_at_a_time's overlapping persistent sections, and a tail with one or two
  outputs (every model's output shapes reach the compiled plan, in output order).
- Out-of-range plans (both arena modes, one to three stages), windows, boxes and buffers:
  error codes, no write outside the buffers (guard bytes, -fsanitize=address,undefined).
- The camera preprocessing (RGB565 / RGB888 / grey, crop, resize, LUT) against the
  numpy mirror the exporter uses for test images.
- The arm-none-eabi size of the runtime (skipped without the toolchain).
The TFLM glue (patch_runner_tflm.cpp) needs TFLM's headers, which are not on any
package registry, so it is not built here.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tflm_app")
CXX = shutil.which("g++")
ARM_CXX, ARM_SIZE = shutil.which("arm-none-eabi-g++"), shutil.which("arm-none-eabi-size")
STRICT = ["-std=c++17", "-Wall", "-Wextra", "-Werror"]
SANITIZED = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os", "-std=c++17",
             "-fno-exceptions", "-fno-rtti"]

needs_cxx = pytest.mark.skipif(CXX is None, reason="no g++ on PATH: the host C++ tests need a C++17 compiler")


def build(exe, sources, includes=()):
    """g++ -Wall -Wextra -Werror with address/UB sanitizers; fails the test with the compiler's message."""
    cmd = [CXX, *STRICT, *SANITIZED, *(f"-I{i}" for i in includes), *sources, "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    return str(exe)


def run(*cmd):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def read_int8(path):
    return np.fromfile(path, dtype=np.int8)


@pytest.fixture(scope="module", params=[(0, "resident")] + [(stages, mode) for stages in (1, 2)
                                                            for mode in ("resident", "one_at_a_time")],
                ids=lambda p: f"{p[0]}_stage-{p[1]}")
def bundle_dir(request, tmp_path_factory, small_cnn_tflite):
    """Real bundles of the small CNN written by the converter, in each arena mode: the whole model (no
    stage: the tail reads the image), one stage (2x3 patches, split after the residual block), or two
    (2x2 patches up to the first split point, then 2x3 patches of that stage buffer up to the last one)."""
    from converters.patching import split_patch_stage, split_points, split_stages, whole_model, write_bundle
    from converters.patching.bundle import finalize

    num_stages, mode = request.param
    points = split_points(small_cnn_tflite)
    if num_stages == 0:
        bundle = whole_model(small_cnn_tflite)
    elif num_stages == 1:
        bundle = split_patch_stage(small_cnn_tflite, points[-1], (2, 3))
    else:
        bundle = split_stages(small_cnn_tflite, [(points[0], 2), (points[-1], (2, 3))])
    assert len(bundle.stages) == num_stages
    folder = tmp_path_factory.mktemp("bundle") / "small_cnn"
    write_bundle(finalize(bundle, interpreters=mode), folder)
    return str(folder)


def check_arena_txt(io, bundle):
    """stage_check's arena.txt (from the compiled plan) against the bundle's stages and arena."""
    first, *stage_lines = (io / "arena.txt").read_text().splitlines()
    mode, temp_reserve, slots, size, *offsets = (int(v) for v in first.split())
    arena = bundle.arena
    one_at_a_time = arena.get("interpreters", "resident") == "one_at_a_time"
    assert mode == (1 if one_at_a_time else 0)
    assert temp_reserve == arena.get("temp_reserve", 0)
    assert slots == (1 if one_at_a_time else len(bundle.models))
    assert size == arena["size"]
    assert offsets == [s["offset"] for s in sorted(arena["persistent"], key=lambda s: s["model"])]
    assert len(stage_lines) == len(bundle.stages) == len(arena["stages"])
    for line, stage, section in zip(stage_lines, bundle.stages, arena["stages"]):
        h, w, c, scale, zero_point, offset, section_size = line.split()
        assert [int(h), int(w), int(c)] == [int(d) for d in stage["shape"]]
        assert np.float32(scale) == np.float32(stage["scale"]) and int(zero_point) == stage["zero_point"]
        assert (int(offset), int(section_size)) == (section["offset"], section["size"])


def check_outputs_txt(io, bundle):
    """stage_check's outputs.txt (from the compiled plan): every model's output shapes, in output order."""
    lines = (io / "outputs.txt").read_text().splitlines()
    assert [[tuple(int(d) for d in shape.split("x")) for shape in line.split()] for line in lines] == [
        [tuple(int(d) for d in shape) for shape in m.output_shapes] for m in bundle.models]


def sketch_sources(sketch):
    """The plain-C++ sources of an exported sketch (everything but the TFLM glue and the .ino)."""
    return sorted(os.path.join(sketch, f) for f in os.listdir(sketch)
                  if f.endswith(".cpp") and f != "patch_runner_tflm.cpp")


@needs_cxx
def test_stages_match_host_patch_runner(bundle_dir, tmp_path):
    from converters.export.arduino import export_arduino, model_image, prepare_test_image
    from converters.patching import read_bundle
    from tinyvision.runtime.patch_runner import PatchRunner

    bundle = read_bundle(bundle_dir)
    H, W, C = bundle.image["shape"]
    image = np.random.default_rng(3).integers(-128, 128, (H, W, C), dtype=np.int8)
    _, stages = PatchRunner(bundle).run(image, return_stage=True)
    stages = [s[0] for s in stages]  # per stage: (Hs, Ws, Cs) for the one image
    sketch = export_arduino(bundle_dir, tmp_path / "out", verbose=False).sketch_dir

    io = tmp_path / "io"
    io.mkdir()
    image.tofile(io / "image.bin")
    # The patch outputs of a stage tile its buffer exactly once (bundle validation), so patch i's TFLM
    # output is its box of the host runner's buffer: the C++ side must put it back in place. Only the
    # tiles come from Python: every window, stage 1's included, is copied from what the C++ side built.
    for i, p in enumerate(bundle.patches):
        o = p.output
        tile = stages[p.stage][o.y:o.y + o.h, o.x:o.x + o.w, o.c:o.c + o.channels]
        np.ascontiguousarray(tile).tofile(io / f"tile_{i}.bin")
    exe = build(tmp_path / "stage_check", [os.path.join(APP, "tests", "stage_check.cpp"), *sketch_sources(sketch)],
                includes=[sketch])
    run(exe, io)

    for i, p in enumerate(bundle.patches):
        w = p.window
        source = image if p.stage == 0 else stages[p.stage - 1]
        want = source[w.y:w.y + w.h, w.x:w.x + w.w, :]
        np.testing.assert_array_equal(read_int8(io / f"window_{i}.bin"), want.reshape(-1),
                                      err_msg=f"window of patch {i} (stage {p.stage})")
    for k, stage in enumerate(stages):
        np.testing.assert_array_equal(read_int8(io / f"stage_{k}.bin"), stage.reshape(-1), err_msg=f"stage {k}")
    flash = model_image(bundle)  # each model is read from its offset in the one flash image
    for m, model in enumerate(bundle.models):
        assert (io / f"model_{m}.bin").read_bytes() == flash.model(m), f"model {m} is not where the plan points"
    test_image, _, _ = prepare_test_image(bundle)
    np.testing.assert_array_equal(read_int8(io / "test_image.bin"), test_image.reshape(-1))
    check_arena_txt(io, bundle)
    check_outputs_txt(io, bundle)


ONE_AT_A_TIME_ARENA = {  # the persistent sections share one slot above shared; AllocateTensors may use [0, 128)
    "size": 320, "interpreters": "one_at_a_time", "temp_reserve": 128, "shared": {"offset": 0, "size": 256},
    "stages": [{"offset": 128, "size": 128}], "persistent": [{"model": i, "offset": 256, "size": 64} for i in range(3)],
    "offline_plans": False}


@needs_cxx
@pytest.mark.parametrize("tail_outputs", [((1, 1, 3),), ((1, 1, 3), (2, 5, 18))], ids=["one_output", "two_outputs"])
@pytest.mark.parametrize("one_at_a_time", [False, True], ids=["resident", "one_at_a_time"])
def test_channel_offsets_and_padded_stage_from_python_plan(tmp_path, one_at_a_time, tail_outputs):
    """A plan written from Python: two patches fill different channel ranges of the same pixels; the tail has
    one output, or two (a detector with one output per scale), which the compiled plan lists in order."""
    from converters.export.arduino import render_plan_data, render_test_image
    from converters.export.flash_image import FlashImage
    from tinyvision.bundle import Box, Bundle, BundleModel, Patch, Window

    H, W, C, Hs, Ws, Cs = 9, 11, 2, 4, 5, 6
    models = [
        BundleModel("wide", "patch", b"\x00" * 20, (9, 11, 2), ((4, 5, 4),), 0, 100, 64),
        BundleModel("narrow", "patch", b"\x01" * 20, (6, 7, 2), ((4, 5, 2),), 0, 100, 64),
        BundleModel("tail", "tail", b"\x02" * 20, (4, 5, 6), tail_outputs, 0, 200, 64),
    ]
    patches = [Patch(0, Window(0, 0, 11, 9), Box(0, 0, 0, 5, 4, 4)),
               Patch(1, Window(2, 1, 7, 6), Box(0, 0, 4, 5, 4, 2))]
    arena = {"size": 448, "shared": {"offset": 0, "size": 256}, "stages": [{"offset": 128, "size": 128}],
             "persistent": [{"model": i, "offset": 256 + 64 * i, "size": 64} for i in range(3)],
             "offline_plans": False}
    if one_at_a_time:
        arena = ONE_AT_A_TIME_ARENA
    quant = {"dtype": "int8", "scale": 0.05, "zero_point": 3}
    bundle = Bundle("tunnels", {}, {"shape": [H, W, C], **quant}, [{"shape": [Hs, Ws, Cs], **quant}], models,
                    patches, 2, arena)
    sketch = tmp_path / "sketch"
    sketch.mkdir()
    flash = FlashImage(b"".join(m.data for m in models), (0, 20, 40))
    header, source = render_plan_data(bundle, flash, ["a", 'quote " back \\ slash', "\u00e9t\u00e9"])
    (sketch / "plan_data.h").write_text(header)
    (sketch / "plan_data.cpp").write_text(source)
    (sketch / "model_data.h").write_text("alignas(16) extern const unsigned char kTinyVisionModels[];\n")
    (sketch / "model_data.cpp").write_text('#include "model_data.h"\nalignas(16) const unsigned char '
                                           f"kTinyVisionModels[60] = {{{', '.join(str(b) for b in flash.data)}}};\n")
    test_header, test_source = render_test_image(np.zeros((H, W, C), np.int8), -1)
    (sketch / "test_image.h").write_text(test_header)
    (sketch / "test_image.cpp").write_text(test_source)
    shutil.copy(os.path.join(APP, "tinyvision_runtime.h"), sketch)
    shutil.copy(os.path.join(APP, "tinyvision_runtime.cpp"), sketch)

    rng = np.random.default_rng(5)
    image = rng.integers(-128, 128, (H, W, C), dtype=np.int8)
    io = tmp_path / "io"
    io.mkdir()
    image.tofile(io / "image.bin")
    want = np.zeros((Hs, Ws, Cs), np.int8)
    for i, p in enumerate(patches):
        o = p.output
        tile = rng.integers(-128, 128, (o.h, o.w, o.channels), dtype=np.int8)
        tile.tofile(io / f"tile_{i}.bin")
        want[o.y:o.y + o.h, o.x:o.x + o.w, o.c:o.c + o.channels] = tile
    exe = build(tmp_path / "stage_check", [os.path.join(APP, "tests", "stage_check.cpp"), *sketch_sources(sketch)],
                includes=[sketch])
    run(exe, io)
    np.testing.assert_array_equal(read_int8(io / "stage_0.bin"), want.reshape(-1))
    np.testing.assert_array_equal(read_int8(io / "window_1.bin"), image[1:7, 2:9].reshape(-1))
    assert [(io / f"model_{m}.bin").read_bytes() for m in range(3)] == [flash.model(m) for m in range(3)]
    check_arena_txt(io, bundle)
    check_outputs_txt(io, bundle)


@needs_cxx
def test_out_of_range_plans_and_copies_fail_cleanly(tmp_path):
    exe = build(tmp_path / "bounds_test", [os.path.join(APP, "tinyvision_runtime.cpp"),
                                           os.path.join(APP, "tests", "bounds_test.cpp")])
    out = run(exe)
    assert "checks passed" in out
    print(out.strip())


def rgb565_to_rgb888(frame, width, height, big_endian):
    """The test's own reference: 5/6-bit channels widened by bit replication."""
    b = frame.reshape(height, width, 2).astype(np.uint16)
    v = (b[..., 0] << 8 | b[..., 1]) if big_endian else (b[..., 1] << 8 | b[..., 0])
    r, g, bl = (v >> 11) & 0x1F, (v >> 5) & 0x3F, v & 0x1F
    return np.stack([(r << 3) | (r >> 2), (g << 2) | (g >> 4), (bl << 3) | (bl >> 2)], -1).astype(np.uint8)


@needs_cxx
def test_camera_preprocessing_matches_python(tmp_path):
    from converters.export.arduino import pixel_lut, pixels_to_image

    exe = build(tmp_path / "preprocess_check", [os.path.join(APP, "tinyvision_runtime.cpp"),
                                                os.path.join(APP, "tests", "preprocess_check.cpp")])
    rng = np.random.default_rng(11)
    cases = [  # format, frame w, h, model H, W, C, scale, zero point
        (0, 160, 120, 20, 24, 3, np.float32(1 / 127.5), 0),  # (p - 127.5) / 127.5 / scale: ties everywhere
        (1, 40, 30, 12, 12, 3, 0.0078125, -1),
        (2, 33, 47, 9, 5, 3, 0.00784226506948471, -1),
        (3, 17, 13, 5, 7, 1, 0.02, 10),
        (0, 64, 48, 16, 16, 1, 0.01, -5),  # RGB -> grey
        (3, 16, 16, 8, 8, 3, 0.03, 0),  # grey -> RGB
    ]
    for fmt, fw, fh, h, w, c, scale, zp in cases:
        bpp = {0: 3, 1: 2, 2: 2, 3: 1}[fmt]
        frame = rng.integers(0, 256, fw * fh * bpp, dtype=np.uint8)
        frame.tofile(tmp_path / "frame.bin")
        out = tmp_path / "out.bin"
        run(exe, tmp_path / "frame.bin", fw, fh, fmt, h, w, c, repr(float(scale)), zp, 127.5, 127.5, out)
        got = read_int8(out)
        if fmt == 0:
            pixels = frame.reshape(fh, fw, 3)
        elif fmt == 3:
            pixels = frame.reshape(fh, fw)
        else:
            pixels = rgb565_to_rgb888(frame, fw, fh, big_endian=fmt == 1)
        np.testing.assert_array_equal(got[-256:], pixel_lut(np.float32(scale), zp), err_msg=f"LUT, case {fmt}")
        want = pixels_to_image(pixels, (h, w, c), np.float32(scale), zp)
        np.testing.assert_array_equal(got[:-256], want.reshape(-1), err_msg=f"image, format {fmt} {fw}x{fh}")


@pytest.mark.skipif(ARM_CXX is None or ARM_SIZE is None,
                    reason="no arm-none-eabi-g++/arm-none-eabi-size on PATH (Debian: gcc-arm-none-eabi "
                           "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib)")
def test_runtime_builds_for_cortex_m4(tmp_path):
    obj = tmp_path / "tinyvision_runtime.o"
    done = subprocess.run([ARM_CXX, *ARM_FLAGS, "-Wall", "-Wextra", "-Werror", "-c",
                           os.path.join(APP, "tinyvision_runtime.cpp"), "-o", str(obj)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    size = subprocess.run([ARM_SIZE, str(obj)], capture_output=True, text=True, check=True).stdout
    print(size)
    text, data, bss = (int(v) for v in size.strip().splitlines()[-1].split()[:3])
    assert data == 0 and bss == 0, "the runtime core must keep no state in RAM"
    assert text < 8 * 1024
