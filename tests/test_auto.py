"""`convert --patches=auto` picks what serves the board: the least static RAM (arena + runtime objects,
as `export --arduino` counts it) within the MAC, flash and RAM limits, every pick built and measured on
TFLM first; the whole model (a bundle with no patch stage) when no split beats it; a tunnel model takes
its tunnels. Whole-model bundles and plain .tflite files export as sketches; identical model files are
stored once."""
import dataclasses
import re
import types

import numpy as np
import pytest

from conftest import int8_tflite
from converters.cli.bundle_convert import _chain, convert_to_bundle
from converters.export.arduino import export_arduino, fit_report
from converters.patching import read_bundle, split_patch_stage, split_points, whole_model, write_bundle
from converters.patching.bundle import finalize
from converters.patching.search import Candidate
from tinyvision.errors import TinyVisionError
from tinyvision.runtime.patch_runner import PatchRunner, verify_bundle


def _flags(output, **overrides):
    """The flags `tinyvision convert --patches=auto` passes to ``convert_to_bundle``, with its defaults."""
    values = dict(model="model.tflite", output=str(output), patches="auto", split=None, budget=None, flash_budget=None,
                  board="nano33ble", max_mac_overhead=0.15, max_latency_overhead=None, max_flash_overhead=0.25,
                  interpreters="one_at_a_time", verify=True, partial_execution=False, deep_search=False)
    values.update(overrides)
    return types.SimpleNamespace(**values)


@pytest.fixture(scope="module")
def mobilenet_v2():
    """keras MobileNetV2(0.35, 64x64x3, 10 classes, random weights) int8 .tflite bytes."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    keras_model = tf.keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None, classes=10,
                                                    classifier_activation=None)
    return int8_tflite(keras_model, samples=3)


@pytest.fixture(scope="module")
def auto_bundle_dir(mobilenet_v2, tmp_path_factory):
    """The default auto pick of the MobileNetV2 (written, verified bit-exact by convert)."""
    out = tmp_path_factory.mktemp("auto") / "mbv2_auto"
    convert_to_bundle(mobilenet_v2, _flags(out))
    return out


def test_auto_pick_is_measured_within_budgets_and_exports(auto_bundle_dir, mobilenet_v2, tmp_path, capsys):
    bundle = read_bundle(auto_bundle_dir)
    unsplit = finalize(whole_model(mobilenet_v2))
    picked, whole = fit_report(bundle), fit_report(unsplit)
    assert picked.ram_bytes <= whole.ram_bytes  # never worse than the unsplit model
    assert picked.ram_bytes <= picked.ram_available and picked.flash_bytes <= picked.flash_available
    assert sum(len(m.data) for m in bundle.models) <= 1.25 * len(mobilenet_v2)
    report = export_arduino(auto_bundle_dir, tmp_path / "sketch", verbose=False)  # never refused for fit
    assert report.ram_bytes == picked.ram_bytes


def test_deep_search_picks_a_deeper_chain_of_less_sram(auto_bundle_dir, mobilenet_v2, tmp_path, capsys):
    """--deep_search: the pick needs less static RAM than the default one, is bit-exact, and the printed
    --patches line is the chosen chain."""
    out = tmp_path / "deep"
    convert_to_bundle(mobilenet_v2, _flags(out, deep_search=True))
    printed = capsys.readouterr().out
    assert "verified: bit-exact" in printed
    chain = _chain(re.search(r"the same chain without the search: --patches=(\S+)", printed).group(1))
    assert f"chosen: {Candidate(tuple(chain), 0, 0.0, 0).label}:" in printed
    deep = read_bundle(out)
    assert len(deep.stages) == len(chain) > 4
    assert fit_report(deep).ram_bytes < fit_report(read_bundle(auto_bundle_dir)).ram_bytes


def test_a_miss_falls_back_to_the_next_point(auto_bundle_dir, mobilenet_v2, tmp_path, capsys):
    """A budget just under the first pick's measured RAM: that point (estimated below it) is built,
    found over, and the next point that fits is written instead of failing."""
    first = fit_report(read_bundle(auto_bundle_dir)).ram_bytes
    out = tmp_path / "tighter"
    try:
        convert_to_bundle(mobilenet_v2, _flags(out, budget=str(first - 1)))
    except TinyVisionError as e:  # nothing at all fits: one line, nothing written
        assert "no split" in str(e) and not out.exists()
        return
    text = capsys.readouterr().out
    assert fit_report(read_bundle(out)).ram_bytes <= first - 1
    assert "over the budget, next point" in text or "no split beats" in text or "chosen:" in text


def test_no_split_helps_writes_the_whole_model(small_cnn_tflite, tmp_path, capsys):
    """With no extra flash allowed every split is out: auto writes the whole (optimized) model as a bundle
    with no patch stage, says so in one line, and the bundle runs and exports like any other."""
    out = tmp_path / "whole"
    convert_to_bundle(small_cnn_tflite, _flags(out, max_flash_overhead=0.0))
    text = capsys.readouterr().out
    assert sum("no split beats the unsplit model" in line for line in text.splitlines()) == 1
    bundle = read_bundle(out)
    assert bundle.kind == "whole_model" and not bundle.stages and not bundle.patches and len(bundle.models) == 1
    assert bundle.models[0].data == small_cnn_tflite
    x = np.random.default_rng(0).integers(-128, 128, (2, *bundle.image["shape"]), dtype=np.int8)
    outputs = PatchRunner(bundle).run(x)
    assert outputs.shape[0] == 2
    assert verify_bundle(bundle, small_cnn_tflite).ok
    export_arduino(out, tmp_path / "sketch", verbose=False)


def test_a_model_over_the_boards_flash_is_chosen_by_sram(small_cnn_tflite, tmp_path, capsys):
    """A model whose weights alone exceed the board's flash (the 3.7 MB PyTorch MobileNetV2 on the Nano): no
    bundle can fit that flash, so auto says so in one line and picks by SRAM alone; export for that board
    then refuses for flash, naming it."""
    from converters.export.boards import get_board

    unsplit_flash = fit_report(finalize(whole_model(small_cnn_tflite, "model")), "nano33ble").flash_bytes
    small = dataclasses.replace(get_board("nano33ble"), name="small-flash", flash_bytes=unsplit_flash - 16)
    out = tmp_path / "over"
    convert_to_bundle(small_cnn_tflite, _flags(out, board=small))
    text = capsys.readouterr().out
    assert sum("no bundle of it fits that board's flash, so the choice is by SRAM alone" in line
               for line in text.splitlines()) == 1
    bundle = read_bundle(out)
    assert fit_report(bundle, "nano33ble").ram_bytes <= fit_report(finalize(whole_model(small_cnn_tflite, "m")),
                                                                     "nano33ble").ram_bytes
    with pytest.raises(TinyVisionError, match="does not fit small-flash: flash"):
        export_arduino(out, tmp_path / "sketch", board=small, verbose=False)


def test_export_arduino_takes_a_plain_tflite(small_cnn_tflite, tmp_path):
    from converters.export.flash_image import image_size

    path = tmp_path / "small.tflite"
    path.write_bytes(small_cnn_tflite)
    report = export_arduino(str(path), tmp_path / "out", verbose=False)
    assert report.sketch_dir.endswith("tinyvision_small")
    assert report.flash["models"] == image_size([small_cnn_tflite])  # its flash image
    assert path.read_bytes() == small_cnn_tflite  # the input is never modified


def test_identical_model_files_are_stored_once(small_cnn_tflite, tmp_path):
    """A patch that runs a byte-identical copy of another patch model runs that model instead."""
    n = split_points(small_cnn_tflite)[-1]
    bundle = split_patch_stage(small_cnn_tflite, n, 4)
    count = len(bundle.models)
    shared = max(range(count - 1), key=lambda i: sum(p.model == i for p in bundle.patches))  # the interior model
    assert sum(p.model == shared for p in bundle.patches) > 1
    bundle.models.insert(bundle.tail, dataclasses.replace(bundle.models[shared], name="copy"))
    bundle.tail += 1
    next(p for p in bundle.patches if p.model == shared).model = bundle.tail - 1
    write_bundle(finalize(bundle), tmp_path / "b")
    written = read_bundle(tmp_path / "b")
    assert len(written.models) == count
    assert len({m.data for m in written.models}) == count
    assert verify_bundle(written, small_cnn_tflite).ok


def test_auto_takes_the_tunnels_of_a_tunnel_model(tmp_path, capsys):
    """seed003's tunnel layout at test size (17 tunnels, 64x64): auto splits it into its tunnels."""
    import models
    from conftest import randomize
    from converters.quantize import to_int8_tflite
    from tinyvision.data import synthetic_arrays

    model = randomize(models.build("seed003_imagenet", resolution=64, patch_size=16, head_units=16, classes=5,
                                   stages=((1, 8, 1, 1, 3, 1), (6, 16, 1, 2, 3, 2))))
    data = to_int8_tflite(model, synthetic_arrays(4, resolution=64)[0], max_samples=4)
    out = tmp_path / "tunnels"
    convert_to_bundle(data, _flags(out))
    text = capsys.readouterr().out
    assert "built of patch tunnels" in text
    bundle = read_bundle(out)
    if "chosen: the tunnels" in text:
        assert bundle.kind == "tunnels"
    else:  # the whole model needs less: auto is never worse than it
        assert bundle.kind == "whole_model" and "do not beat the unsplit model" in text
