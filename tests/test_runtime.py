"""tinyvision.runtime on the real TFLM (tflite-micro pip) and tf.lite: figures, arena search, crashes, errors."""
import os

import numpy as np
import pytest

from conftest import int8_tflite
from tinyvision.errors import TinyVisionError
from tinyvision.runtime import isolated, tflm

# keras MobileNetV2(alpha=0.35, 144x144x3, 1000 classes, no softmax, random weights), full int8.
MOBILENET_HEAD = 311_040
MOBILENET_TAIL = {"per_tensor": 71_760, "per_channel": 79_760}


@pytest.fixture(scope="module")
def small_int8():
    """conv s2 -> (dw -> conv) + residual -> max pool -> conv -> global avg pool -> dense -> softmax."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    L = tf.keras.layers
    x_in = tf.keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x_in)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    y = L.Conv2D(8, 1)(y)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(12, 3, padding="valid")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6)(x)
    out = L.Softmax()(x)
    return int8_tflite(tf.keras.Model(x_in, out), samples=4)


def with_softmax_input_scale(model_bytes, scale):
    """A copy of the model whose SOFTMAX input has quantization scale ``scale`` (flatbuffer object API)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.SOFTMAX:
            graph.tensors[op.inputs[0]].quantization.scale = np.array([scale], np.float32)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ---------------------------------------------------------------- TFLM figures


@pytest.mark.parametrize("kind", ["per_tensor", "per_channel"])
def test_mobilenet_v2_reference_figures(mobilenet_v2, kind):
    report = tflm.measure(mobilenet_v2[kind])
    assert report.head_bytes == MOBILENET_HEAD
    assert report.tail_bytes == MOBILENET_TAIL[kind]
    assert report.total_bytes == MOBILENET_HEAD + MOBILENET_TAIL[kind]


def test_min_arena_is_the_smallest_that_runs(mobilenet_v2):
    model = mobilenet_v2["per_tensor"]
    needed = tflm.min_arena_bytes(model)
    # Only the tail's end padding (< 16 bytes) can be saved against the total TFLM reports.
    assert MOBILENET_HEAD + MOBILENET_TAIL["per_tensor"] - 16 < needed <= MOBILENET_HEAD + MOBILENET_TAIL["per_tensor"]
    assert tflm.measure(model, arena_size=needed).head_bytes == MOBILENET_HEAD
    for smaller in (needed - 1, needed - 16):
        with pytest.raises(TinyVisionError, match=f"arena of {smaller} bytes is too small.*needs {needed} bytes"):
            tflm.measure(model, arena_size=smaller)


def test_min_arena_small_model_includes_planning_room(small_int8):
    needed = tflm.min_arena_bytes(small_int8)
    report = tflm.measure(small_int8, arena_size=needed)
    # Planning needs temporary room in the head, so tiny models need more than head + tail.
    assert needed >= report.total_bytes - 15
    with pytest.raises(TinyVisionError, match="too small"):
        tflm.run(small_int8, [np.zeros((1, 16, 16, 3), np.int8)], arena_size=needed - 1)


# ---------------------------------------------------------------- inference


def test_tflm_matches_tflite_reference_bit_exact(small_int8):
    result = tflm.compare(small_int8, seed=3, samples=3)
    assert result, result.detail
    assert result.mismatches == 0 and result.detail == "bit-exact"
    x = np.random.default_rng(7).integers(-128, 128, (1, 16, 16, 3), dtype=np.int8)
    got = tflm.run(small_int8, [x])
    want = tflm.run_reference(small_int8, [x])
    assert len(got) == 1 and got[0].dtype == np.int8 and got[0].shape == (1, 6)
    np.testing.assert_array_equal(got[0], want[0])


def test_mobilenet_v2_bit_exact(mobilenet_v2):
    assert tflm.compare(mobilenet_v2["per_tensor"], seed=1)


def test_wrong_inputs_are_clear_errors(small_int8):
    with pytest.raises(TinyVisionError, match=r"input 0 of model must be int8 \(1, 16, 16, 3\), got float32"):
        tflm.run(small_int8, [np.zeros((1, 16, 16, 3), np.float32)])
    with pytest.raises(TinyVisionError, match="takes 1 input"):
        tflm.run(small_int8, [np.zeros((1, 16, 16, 3), np.int8)] * 2)


def test_float_model_is_rejected_where_int8_is_required():
    import tensorflow as tf

    x_in = tf.keras.Input((4,))
    data = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(x_in, tf.keras.layers.Dense(2)(x_in))).convert()
    with pytest.raises(TinyVisionError, match="not an int8 model: its input .* is float32"):
        tflm.require_int8(data)
    with pytest.raises(TinyVisionError, match="not an int8 model"):
        tflm.compare(data)
    # TFLM itself runs float models.
    assert tflm.run(data, [np.ones((1, 4), np.float32)])[0].shape == (1, 2)


# ---------------------------------------------------------------- failures


def test_tflm_abort_is_an_error_and_the_parent_survives(small_int8):
    broken = with_softmax_input_scale(small_int8, 1e-10)  # TFLM's softmax prepare aborts on it
    with pytest.raises(TinyVisionError, match=r"TFLM aborted \(SIGABRT\) while allocating broken.tflite"):
        tflm.measure(broken, name="broken.tflite")
    assert tflm.measure(small_int8).head_bytes > 0


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a TFLite flatbuffer"),
        (b"garbage bytes, not a model", "not a TFLite flatbuffer"),
        (b"\0\0\0\0TFL3" + b"\xff" * 64, "model"),
    ],
)
def test_garbage_bytes_are_clear_errors(data, message):
    with pytest.raises(TinyVisionError, match=message):
        tflm.measure(data)


def test_truncated_model_is_an_error(small_int8):
    with pytest.raises(TinyVisionError):
        tflm.run(small_int8[: len(small_int8) // 2], [np.zeros((1, 16, 16, 3), np.int8)], name="cut.tflite")


def test_op_tflm_cannot_run_reports_tflm_message(small_int8):
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(small_int8, 0))
    for code in model.operatorCodes:
        if code.builtinCode == schema.BuiltinOperator.SOFTMAX:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = "NoSuchKernel"
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(TinyVisionError, match="TFLM cannot load custom.tflite: .*registration"):
        tflm.measure(bytes(builder.Output()), name="custom.tflite")


# ---------------------------------------------------------------- isolated


def test_isolated_call_runs_in_another_process():
    assert isolated.call("os:getpid") != os.getpid()
    assert isolated.call("operator:add", np.arange(3), 1).tolist() == [1, 2, 3]


def test_isolated_call_failures_are_one_line_errors():
    with pytest.raises(TinyVisionError, match=r"^subprocess aborted \(SIGABRT\) while running os:abort$"):
        isolated.call("os:abort")
    with pytest.raises(TinyVisionError, match=r"timed out after 1 s while sleeping"):
        isolated.call("time:sleep", 30, timeout=1, task="sleeping")
    with pytest.raises(TinyVisionError, match=r"failed while running math:sqrt: ValueError: math domain error"):
        isolated.call("math:sqrt", -1.0)
    with pytest.raises(TinyVisionError, match=r"exited with status 3"):
        isolated.call("os:_exit", 3)


def test_isolated_call_reraises_tinyvision_errors_as_is():
    with pytest.raises(TinyVisionError, match=r"^junk.bin is not a TFLite flatbuffer"):
        isolated.call("tinyvision.fileio:check_tflite_bytes", b"junk", "junk.bin")


def test_one_subprocess_runs_several_interpreters(small_int8, mobilenet_v2):
    reports = tflm.measure_many([small_int8, ("mobilenet", mobilenet_v2["per_channel"])])
    assert reports[1].total_bytes == MOBILENET_HEAD + MOBILENET_TAIL["per_channel"]
    assert reports[0] == tflm.measure(small_int8)


JOBS = '''
import os, sys
from tinyvision.runtime import tflm
from tinyvision.runtime.isolated import captured_c_output


def measure_and_list_modules(model_bytes):
    return tflm.measure_job(model_bytes, None, "model"), sorted(sys.modules)


def print_then_abort():
    with captured_c_output():
        os.write(2, b"native: about to fail\\n")
        os.abort()
'''


@pytest.fixture
def jobs_module(tmp_path, monkeypatch):
    """A module the child can import (it inherits the parent's sys.path)."""
    (tmp_path / "tv_isolated_jobs.py").write_text(JOBS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tv_isolated_jobs"


def test_tflm_child_does_not_import_tensorflow(jobs_module, small_int8):
    report, modules = isolated.call(f"{jobs_module}:measure_and_list_modules", small_int8)
    assert report == tflm.measure(small_int8)
    assert "tflite_micro" in modules and "tensorflow" not in modules


def test_native_message_before_an_abort_is_reported(jobs_module):
    with pytest.raises(TinyVisionError, match=r"aborted \(SIGABRT\) while testing: native: about to fail$"):
        isolated.call(f"{jobs_module}:print_then_abort", task="testing")
