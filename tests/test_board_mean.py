"""converters.passes.board_mean: a rescaling global-average MEAN rewritten as a DEPTHWISE_CONV_2D that the
board's library computes exactly as tflite-micro, bit-exact with the original on host TFLM (the reference).
The board side is checked on the emulated Cortex-M4 by tests/test_board_runtime.py."""
import numpy as np
import pytest

from conftest import int8_tflite


def _opcodes(data):
    from converters.ir import Model

    return [op.opcode for op in Model.from_bytes(data).main.ops]


@pytest.mark.parametrize("size", [2, 5])  # n = 4 (a power of two: the multiplier exactly) and 25 (searched)
def test_rescaling_mean_becomes_an_exact_depthwise(size):
    import tensorflow as tf

    from converters.export.board_kernels import board_differences
    from converters.passes.board_mean import board_exact_means_tflite
    from tinyvision.runtime import tflm

    x_in = tf.keras.Input((size, size, 16))
    data = int8_tflite(tf.keras.Model(x_in, tf.keras.layers.GlobalAveragePooling2D()(x_in)), samples=8)
    assert _opcodes(data) == ["MEAN"]
    new, count = board_exact_means_tflite(data)
    assert count == 1 and _opcodes(new) == ["DEPTHWISE_CONV_2D", "RESHAPE"]
    assert len(board_differences(data)) == 1 and board_differences(new) == []  # what analyze reports
    original, rewritten = tflm.open_interpreter(data, None, "mean"), tflm.open_interpreter(new, None, "depthwise")
    rng = np.random.default_rng(size)
    images = rng.integers(-128, 128, size=(300, 1, size, size, 16), dtype=np.int8)
    images[:20] = rng.choice(np.array([-128, 127], np.int8), size=(20, 1, size, size, 16))  # the extreme sums
    for x in images:
        (want,), (got,) = tflm.invoke(original, [x], "mean"), tflm.invoke(rewritten, [x], "depthwise")
        np.testing.assert_array_equal(got, want)


def test_a_mean_that_keeps_its_quantization_is_left_alone():
    from converters.export.board_kernels import board_differences
    from converters.ir import Model
    from converters.passes.board_mean import board_exact_means

    import tensorflow as tf

    x_in = tf.keras.Input((4, 4, 8))
    model = Model.from_bytes(int8_tflite(tf.keras.Model(x_in, tf.keras.layers.GlobalAveragePooling2D()(x_in))))
    (mean,) = model.main.ops
    mean.outputs[0].quantization = mean.inputs[0].quantization
    assert board_exact_means(model) == 0 and [op.opcode for op in model.main.ops] == ["MEAN"]
    (difference,) = board_differences(model.to_bytes())  # the board's library truncates its division
    assert difference.opcode == "MEAN" and "truncating" in difference.why


def test_differences_of_one_kind_are_one_line():
    """A channel stage gives every group its own pool: the report counts them instead of repeating them."""
    from converters.export.board_kernels import BoardDifference, difference_lines

    groups = [BoardDifference(f"stage7_channels_{g}.tflite", 1, "MEAN", f"Mean/group{g}", 1, "through float")
              for g in range(12)]
    other = BoardDifference("tail.tflite", 4, "SUM", "Sum", 1, "through float")
    assert difference_lines(groups[:1] + [other]) == [groups[0].line(), other.line()]
    assert difference_lines(groups + [other]) == [
        "MEAN in 12 operators of 12 models (stage7_channels_0.tflite .. stage7_channels_11.tflite) can differ by up "
        "to 1 LSB on the board: through float", other.line()]


def test_convert_rewrites_rescaling_means_unless_told_not_to():
    import tensorflow as tf

    from converters.optimize import optimize_tflite

    x_in = tf.keras.Input((6, 6, 8))
    hidden = tf.keras.layers.Conv2D(8, 3, activation="relu6")(x_in)
    data = int8_tflite(tf.keras.Model(x_in, tf.keras.layers.GlobalAveragePooling2D()(hidden)), samples=8)
    assert "MEAN" in _opcodes(data)
    rewritten, report = optimize_tflite(data, "pooled")  # checked bit-exact with the original on TFLM inside
    assert "MEAN" not in _opcodes(rewritten) and report.board_means == 1
    assert any("--noboard_exact_mean" in line for line in report.lines())
    kept, report = optimize_tflite(data, "pooled", board_exact_mean=False)
    assert "MEAN" in _opcodes(kept) and report.board_means == 0
