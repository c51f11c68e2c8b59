"""tfmot quantize configs for layers shared between tunnels (used by ``flatten``).

tfmot applies its Conv -> BN (-> ReLU) transforms only to layers called once; these
are the configs those transforms give, registered under the ``tinyvision`` package so
``quantize_model`` can clone a model holding them without a ``quantize_scope``.
"""
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_configs as _configs, default_8bit_quantize_registry as _registry)

from tinyvision.layers._common import register


@register
class ConvBeforeBNConfig(_registry.Default8BitConvQuantizeConfig):
    """Conv/DepthwiseConv feeding a BN: per-channel int8 weights, output left in float."""

    def __init__(self, weight_attrs, activation_attrs=(), quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)


@register
class BNOutputConfig(_configs.Default8BitOutputQuantizeConfig):
    """BN ending a Conv+BN pair: its output is quantized."""


@register
class BNBeforeReLUConfig(_configs.NoOpQuantizeConfig):
    """BN followed by a ReLU: nothing quantized here, the ReLU quantizes its output."""
