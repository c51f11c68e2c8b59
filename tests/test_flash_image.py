"""The flash image of several models (converters/export/flash_image.py): every model reads from its offset
exactly as its file does, on TFLM and on tf.lite.Interpreter, and equal vectors are stored once."""
import os

import numpy as np
import pytest

from converters.export.flash_image import BUFFER_ALIGNMENT, image_size, pack_models
from converters.patching import split_patch_stage
from tinyvision.errors import TinyVisionError

SHARED_MODELS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "models")


@pytest.fixture(scope="module")
def patch_models(small_cnn_tflite):
    """The model files of a 3x3 patch stage (nine border variants of the same weights) and its tail."""
    bundle = split_patch_stage(small_cnn_tflite, 4, 3, "small_cnn")
    return [m.data for m in bundle.models]


def _outputs(data, x):
    from tinyvision.runtime import tflm

    interpreter = tflm.open_interpreter(data, 1 << 20, "model")
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return interpreter.get_output(0)


def _tflite_outputs(data, x):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _buffer_starts(data):
    """Where each non-empty buffer's bytes start in ``data`` (a model read from its first byte)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    starts = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            starts.append(buffer._tab.Vector(buffer._tab.Offset(4)))  # the data field's first byte
    return starts


def test_every_model_runs_from_its_offset_bit_exact(patch_models):
    image = pack_models(patch_models)
    assert len(image.offsets) == len(patch_models) and image.offsets[0] == 0
    assert len(image.data) < sum(len(m) for m in patch_models)
    rng = np.random.default_rng(0)
    for data in patch_models:
        index = patch_models.index(data)
        packed = image.model(index)
        from tinyvision.runtime import tflm

        shape, dtype = tflm.open_interpreter(data, 1 << 20, "m").get_input_details(0)["shape"], np.int8
        x = rng.integers(-128, 128, shape).astype(dtype)
        np.testing.assert_array_equal(_outputs(packed, x), _outputs(data, x))
        np.testing.assert_array_equal(_tflite_outputs(packed, x), _tflite_outputs(data, x))


def test_models_and_weights_are_16_byte_aligned(patch_models):
    image = pack_models(patch_models)
    assert len(image.data) % BUFFER_ALIGNMENT == 0
    for offset in image.offsets:
        assert offset % BUFFER_ALIGNMENT == 0
        starts = _buffer_starts(image.data[offset:])
        assert starts and all((offset + s) % BUFFER_ALIGNMENT == 0 for s in starts)


def test_equal_weights_are_stored_once(patch_models):
    from converters.ir import Model

    image = pack_models(patch_models)
    weights = max((t.data for t in Model.from_bytes(patch_models[0]).main.tensors if t.is_constant),
                   key=lambda d: d.nbytes).tobytes()
    assert sum(m.count(weights) for m in patch_models) == 9  # one copy in each border variant
    assert image.data.count(weights) == 1
    assert image_size(patch_models) == len(image.data)


def test_a_single_model_shrinks_and_stays_exact():
    """person_detect's per-channel zero points (8 B each, all 0) are stored once per distinct vector."""
    path = os.path.join(SHARED_MODELS, "person_detect.tflite")
    if not os.path.exists(path):
        pytest.skip("../shared/models is not beside the project")
    with open(path, "rb") as f:
        data = f.read()
    packed = pack_models([data]).model(0)
    assert len(packed) < 0.9 * len(data)
    x = np.random.default_rng(1).integers(-128, 128, (1, 96, 96, 1)).astype(np.int8)
    np.testing.assert_array_equal(_outputs(packed, x), _outputs(data, x))


def test_bad_model_is_refused_in_one_line(patch_models):
    with pytest.raises(TinyVisionError, match="model 1 is not a TFLite flatbuffer"):
        pack_models([patch_models[0], b"\x00" * 64])
