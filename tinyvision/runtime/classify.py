"""Class scores of the same float images from a Keras model, an int8 .tflite on TFLM and a bundle.

Each ``*_scores`` function takes float32 images [N, H, W, C] normalized as for training
(``tinyvision.data``) and returns float32 scores [N, classes]. The int8 paths quantize the
images with the model's input scale and zero point, as the device does, and dequantize the
output with the output's; every TFLM run happens in one isolated subprocess.
"""
import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.runtime import isolated

_HERE = "tinyvision.runtime.classify"


def quantize_images(images, scale, zero_point):
    """float32 [N, H, W, C] -> int8 with round-to-nearest and saturation."""
    return np.clip(np.round(np.asarray(images, np.float32) / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize(values, scale, zero_point):
    return (np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)


def keras_scores(model, images, batch_size=64):
    """Scores of a Keras model (float or QAT fake-quant) on the host."""
    return np.asarray(model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0), np.float32)


def tflm_scores(model_bytes, images, name="model", timeout=None):
    """Scores of a single-input int8 classifier on TFLM (one subprocess for all images)."""
    from tinyvision.runtime.tflm import require_int8

    require_int8(model_bytes, name)
    return isolated.call(f"{_HERE}:tflm_scores_job", bytes(model_bytes), np.asarray(images, np.float32), name,
                         timeout=timeout, who="TFLM", task=f"classifying {len(images)} images with {name}")


def bundle_scores(bundle, images, timeout=None):
    """Scores of a patch bundle (a ``Bundle`` or a bundle folder) on the host PatchRunner."""
    from tinyvision.runtime.patch_runner import PatchRunner

    runner = PatchRunner(bundle)
    image = runner.bundle.image
    outputs = runner.run(quantize_images(images, image["scale"], image["zero_point"]), timeout=timeout)
    tail = runner.bundle.models[runner.bundle.tail].graph().outputs[0].quantization
    scale, zero_point = float(tail.scale.reshape(-1)[0]), int(tail.zero_point.reshape(-1)[0])
    return dequantize(outputs.reshape(len(outputs), -1), scale, zero_point)


def tflm_scores_job(model_bytes, images, name):
    outputs, scale, zero_point = tflm_outputs_job(model_bytes, images, name)
    return np.stack([dequantize(out.reshape(-1), scale, zero_point) for out in outputs])


def tflm_outputs_job(model_bytes, images, name):
    """(raw int8 outputs [N, *output shape without batch], output scale, output zero point) of float images."""
    from tinyvision.runtime import tflm

    interpreter = tflm.open_interpreter(model_bytes, None, name)
    if len(tflm.zero_inputs(interpreter)) != 1:
        raise TinyVisionError(f"{name} must have one image input to run on images")
    shape = tuple(int(d) for d in interpreter.get_input_details(0)["shape"])
    if tuple(images.shape[1:]) != shape[1:]:
        raise TinyVisionError(f"{name} takes images {shape[1:]}, the data is {tuple(images.shape[1:])}")
    in_scale, in_zero = _per_tensor(interpreter.get_input_details(0), name, "input")
    out_scale, out_zero = _per_tensor(interpreter.get_output_details(0), name, "output")
    outputs = [tflm.invoke(interpreter, [image.reshape(shape)], name)[0][0]
               for image in quantize_images(images, in_scale, in_zero)]
    return np.stack(outputs), out_scale, out_zero


def _per_tensor(detail, name, role):
    q = detail["quantization_parameters"]
    if len(q["scales"]) != 1 or q["scales"][0] == 0:
        raise TinyVisionError(f"the {role} of {name} is not per-tensor quantized")
    return float(q["scales"][0]), int(q["zero_points"][0])
