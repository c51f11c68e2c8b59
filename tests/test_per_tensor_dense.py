"""Per-channel dense heads: `export --arduino` refuses them in one line; `convert --per_tensor_dense`
requantizes them per-tensor (an explicit change of values, reported)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from converters.ir import Model
from conftest import int8_tflite, randomize
from tinyvision.errors import TinyVisionError


@pytest.fixture(scope="module")
def per_channel_head():
    """A small int8 CNN whose 6-unit dense head has per-channel weights (TF's default)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    L = tf.keras.layers
    x_in = tf.keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return int8_tflite(randomize(tf.keras.Model(x_in, L.Dense(6)(x))), per_channel_dense=True)  # non-zero biases


def test_rewrite_makes_dense_weights_per_tensor_and_stays_close(per_channel_head):
    from converters.passes.per_tensor_dense import per_tensor_dense
    from converters.quantize import per_channel_fully_connected
    from tinyvision.runtime import tflm

    assert len(per_channel_fully_connected(per_channel_head)) == 1
    model = Model.from_bytes(per_channel_head)
    (done,) = per_tensor_dense(model)
    assert done.channels == 6 and done.max_weight_error <= 0.5
    rewritten = model.to_bytes()
    assert per_channel_fully_connected(rewritten) == []
    fc = next(op for op in model.main.ops if op.opcode == "FULLY_CONNECTED")
    x_scale = fc.inputs[0].quantization.scale[0]
    assert fc.inputs[2].quantization.scale[0] == np.float32(x_scale * fc.inputs[1].quantization.scale[0])
    x = np.random.default_rng(0).integers(-128, 128, (1, 16, 16, 3), dtype=np.int8)
    (before,), (after,) = tflm.run(per_channel_head, [x]), tflm.run(rewritten, [x])
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 2  # values change, a little


def test_export_refuses_per_channel_dense_with_the_fix(per_channel_head, tmp_path):
    from converters.export.arduino import export_arduino
    from converters.patching import split_patch_stage, split_points, write_bundle

    folder = write_bundle(split_patch_stage(per_channel_head, split_points(per_channel_head)[0], 2),
                          tmp_path / "bundle")
    out = tmp_path / "sketch"
    with pytest.raises(TinyVisionError, match="per-channel FULLY_CONNECTED.*--per_tensor_dense") as refused:
        export_arduino(folder, out, verbose=False)
    assert "\n" not in str(refused.value) and not os.path.exists(out)


def test_convert_flag_rewrites_and_reports_the_change(per_channel_head, tmp_path):
    from converters.quantize import per_channel_fully_connected

    source = tmp_path / "head.tflite"
    source.write_bytes(per_channel_head)
    output = tmp_path / "out.tflite"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "converters.cli.main", "convert", f"--model={source}",
                           f"--output={output}", "--per_tensor_dense"], capture_output=True, text=True, cwd=root,
                          env=dict(os.environ, PYTHONPATH=root), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "per-tensor dense CHANGES the outputs" in done.stdout and "FULLY_CONNECTED op" in done.stdout
    assert per_channel_fully_connected(output.read_bytes()) == []
    assert source.read_bytes() == per_channel_head  # the input is never modified
