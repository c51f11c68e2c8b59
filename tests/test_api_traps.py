"""Python API traps: plain tfmot on a tinyvision model, and Keras 3 tensors, fail with a message that says
what to do instead."""
import pytest

from tinyvision.errors import TinyVisionError


def _model():
    import tensorflow as tf

    from tinyvision.layers import InvertedResidual

    inputs = tf.keras.Input((16, 16, 8))
    x = InvertedResidual(8, expansion=2, stride=1)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))


def test_plain_tfmot_points_at_tinyvision_quantize():
    import tensorflow_model_optimization as tfmot

    from tinyvision.training import quantize

    model = _model()
    with pytest.raises(RuntimeError, match=r"quantize the model with tinyvision\.training\.quantize\(model\)"):
        tfmot.quantization.keras.quantize_model(model)
    qat = quantize(model)  # the advertised way works on the same model
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat.layers)


def test_keras_3_tensors_get_a_clear_message():
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip("Keras 3 is not installed")
    from tinyvision.layers import InvertedResidual

    with pytest.raises(TinyVisionError, match=r"Keras 3 tensor .*`import tf_keras as keras`"):
        InvertedResidual(8, expansion=2, stride=1)(keras.Input((16, 16, 8)))
