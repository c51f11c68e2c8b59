"""Requantize per-channel FULLY_CONNECTED weights per-tensor (``convert --per_tensor_dense``).

The Arduino TFLM libraries run FULLY_CONNECTED on CMSIS-NN, which reads one weight scale: a
per-channel dense layer gives wrong results there. This pass rewrites such a layer with one
scale, the largest of its channels' (so no weight leaves the int8 range), and its bias with the
matching scale (input scale x weight scale). Unlike every other pass it CHANGES VALUES: weights
of the channels with smaller scales lose precision. It runs only when the user asks for it, and
the caller reports how much the outputs moved.
"""
import dataclasses

import numpy as np

from converters.ir import Quantization, Tensor


@dataclasses.dataclass(frozen=True)
class DenseRequantization:
    """One rewritten FULLY_CONNECTED: op index, weight tensor name, channel count, and the largest
    change of a real-valued weight (in units of the new scale, <= 0.5)."""

    op_index: int
    weights: str
    channels: int
    max_weight_error: float


def _per_tensor_weights(weights):
    """(new weight Tensor, common scale, per-channel scales, largest error in new-scale steps)."""
    q = weights.quantization
    scales = q.scale.astype(np.float64).reshape(-1)
    common = float(scales.max())
    real = weights.data.astype(np.float64) * scales.reshape((-1,) + (1,) * (weights.data.ndim - 1))
    values = np.clip(np.round(real / common), -127, 127)
    error = float(np.abs(values - real / common).max()) if values.size else 0.0
    quant = Quantization(np.asarray([common], np.float32), np.zeros(1, np.int64), 0)
    return (dataclasses.replace(weights, data=values.astype(np.int8), quantization=quant), np.float32(common),
            scales, error)


def _per_tensor_bias(bias, input_scale, common, scales):
    """The int32 bias requantized from (input scale x channel scale) to (input scale x common scale)."""
    values = np.round(bias.data.astype(np.float64) * scales / float(common))
    values = np.clip(values, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    quant = Quantization(np.asarray([np.float32(input_scale) * common], np.float32), np.zeros(1, np.int64), 0)
    return dataclasses.replace(bias, data=values, quantization=quant)


def per_tensor_dense(model):
    """Rewrite every per-channel int8 FULLY_CONNECTED of ``model``'s main graph per-tensor, in place.

    Weights (O, I) with scales s_c become round(w * s_c / s) with s = max s_c; the int32 bias b_c
    (scale s_in * s_c) becomes round(b_c * s_c / s). New tensors replace the old ones (a tensor
    shared with another op keeps its values there). Returns [DenseRequantization].
    """
    done = []
    for index, op in enumerate(model.main.ops):
        if op.opcode != "FULLY_CONNECTED" or len(op.inputs) < 2 or op.inputs[1] is None:
            continue
        x, weights = op.inputs[0], op.inputs[1]
        q = weights.quantization
        if not weights.is_constant or q is None or not q.per_channel or np.dtype(weights.dtype) != np.int8:
            continue
        new_weights, common, scales, error = _per_tensor_weights(weights)
        op.inputs[1] = new_weights
        bias = op.inputs[2] if len(op.inputs) > 2 else None
        if isinstance(bias, Tensor) and bias.is_constant and bias.quantization is not None:
            op.inputs[2] = _per_tensor_bias(bias, float(x.quantization.scale.reshape(-1)[0]), common, scales)
        done.append(DenseRequantization(index, weights.name, int(scales.size), error))
    return done
