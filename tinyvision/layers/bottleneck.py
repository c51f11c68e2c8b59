"""MobileNetV2 bottleneck blocks: the standard one and its channel-group reordering."""
import numpy as np

from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import (BN_EPSILON, Composite, batch_norm, check_block_args,
                                       depthwise, layers, pointwise, register, relu6)


class _Bottleneck(Composite):
    """Arguments and shape logic common to both blocks.

    Input ``(B, H, W, Cin)``; output ``(B, ceil(H / s), ceil(W / s), filters)``; the
    expanded tensor has ``E = expansion * Cin`` channels. The residual Add is used
    when ``stride == 1`` and ``Cin == filters``.
    """

    def __init__(self, filters, expansion=6, stride=1, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        check_block_args(filters, expansion, stride, kernel_size)
        self.filters = filters
        self.expansion = expansion
        self.stride = stride
        self.kernel_size = kernel_size

    def _residual(self, input_shape):
        return self.stride == 1 and input_shape[-1] == self.filters

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else -(-n // self.stride)
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, expansion=self.expansion, stride=self.stride,
                      kernel_size=self.kernel_size)
        return config


@register
class InvertedResidual(_Bottleneck):
    """Standard MobileNetV2 block: 1x1 expand -> kxk depthwise (stride) -> 1x1 project.

    ``(B, H, W, Cin) -> (B, H/s, W/s, filters)``. Expand (skipped when expansion == 1)
    and depthwise are each followed by BN + ReLU6, project by BN only; residual Add
    when stride 1 and Cin == filters. Sublayers are named like keras.applications
    (``{name}_expand``, ``{name}_expand_BN``, ..., ``{name}_add``), so a block named
    ``block_3`` matches that model's weights layer for layer.

    ``keras_padding=True`` reproduces keras.applications exactly for stride 2: an
    explicit ZeroPadding2D then a 'valid' depthwise (a PAD op and an extra tensor in
    TFLite); the default 'same' padding computes the same values without them.
    """

    def __init__(self, filters, expansion=6, stride=1, kernel_size=3, keras_padding=False,
                 **kwargs):
        super().__init__(filters, expansion, stride, kernel_size, **kwargs)
        self.keras_padding = bool(keras_padding)

    def build(self, input_shape):
        n = self.name
        if self.expansion != 1:
            self.expand = pointwise(self.expansion * input_shape[-1], f"{n}_expand")
            self.expand_bn = batch_norm(f"{n}_expand_BN")
            self.expand_relu = relu6(f"{n}_expand_relu")
        self.pad = None
        if self.stride == 2 and self.keras_padding:
            self.pad = layers.ZeroPadding2D(self._keras_pad(input_shape), name=f"{n}_pad")
        self.depthwise = depthwise(self.kernel_size, self.stride, f"{n}_depthwise",
                                   "valid" if self.pad is not None else "same")
        self.depthwise_bn = batch_norm(f"{n}_depthwise_BN")
        self.depthwise_relu = relu6(f"{n}_depthwise_relu")
        self.project = pointwise(self.filters, f"{n}_project")
        self.project_bn = batch_norm(f"{n}_project_BN")
        self.residual = layers.Add(name=f"{n}_add") if self._residual(input_shape) else None
        super().build(input_shape)

    def _keras_pad(self, input_shape):
        # keras.applications' correct_pad: TF 'same' padding for stride 2 made explicit.
        half = self.kernel_size // 2
        adjust = [1 if n is None else 1 - n % 2 for n in input_shape[1:3]]
        return ((half - adjust[0], half), (half - adjust[1], half))

    def call(self, inputs):
        x = inputs
        if self.expansion != 1:
            x = self.expand_relu(self.expand_bn(self.expand(x)))
        if self.pad is not None:
            x = self.pad(x)
        x = self.depthwise_relu(self.depthwise_bn(self.depthwise(x)))
        x = self.project_bn(self.project(x))
        return self.residual([inputs, x]) if self.residual is not None else x

    def get_config(self):
        config = super().get_config()
        config["keras_padding"] = self.keras_padding
        return config


def _split(total, groups):
    """Channel counts of ``groups`` near-equal slices of ``total`` (the first get the rest)."""
    return [total // groups + (g < total % groups) for g in range(groups)]


@register
class ReorderedBottleneck(_Bottleneck):
    """MobileNetV2 block with its E expanded channels split into ``groups`` slices.

    ``(B, H, W, Cin) -> (B, H/s, W/s, filters)``. For each group g (E_g ~ E / G channels):

        p_g = BN_g(project_g(ReLU6(BN(dw_g(ReLU6(BN(expand_g(x))))))))  # (B, H/s, W/s, filters)

    then ``y = p_0 + p_1 + ... (+ x)`` by a chain of binary Adds. Run group by group, only
    one E_g-channel slice of the expanded tensor is alive at a time (plus x and the
    running sum), instead of all E channels.

    BN/bias placement: each group projection has its own BN right after its conv, so
    every BN folds into the conv before it and the block lowers to CONV_2D (bias, fused
    RELU6) / DEPTHWISE_CONV_2D / ADD only, and tfmot's Conv+BN patterns apply. In
    inference BN_g(y) = a_g * y + b_g, so the sum equals the ungrouped block's
    ``BN(sum_g P_g h_g)`` when all a_g equal the ungrouped scale and the b_g add up to its
    offset: ``set_standard_weights`` writes the ungrouped (gamma, var) to every group and
    (beta, mean) to group 0 only (zeros elsewhere), so group 0 carries the one bias.
    In training each group is normalised with its own batch statistics, so G > 1 is
    equivalent to G = 1 in inference only. ``groups=1`` is exactly the standard block.
    expansion == 1 (no expand conv) supports groups=1 only: slicing channels would need
    a non-conv op.
    """

    def __init__(self, filters, expansion=6, stride=1, kernel_size=3, groups=1, **kwargs):
        super().__init__(filters, expansion, stride, kernel_size, **kwargs)
        if not (isinstance(groups, int) and groups > 0):
            raise TinyVisionError(f"groups must be a positive int, got {groups!r}")
        if groups > 1 and expansion == 1:
            raise TinyVisionError("groups > 1 needs an expand conv (expansion > 1)")
        self.groups = groups

    def build(self, input_shape):
        expanded = self.expansion * input_shape[-1]
        if self.groups > expanded:
            raise TinyVisionError(
                f"{self.name}: {self.groups} groups > {expanded} expanded channels")
        self.group_channels = _split(expanded, self.groups)
        n = self.name
        tag = [f"_g{g}" if self.groups > 1 else "" for g in range(self.groups)]
        if self.expansion != 1:
            self.expand = [pointwise(e, f"{n}_expand{t}") for e, t in zip(self.group_channels, tag)]
            self.expand_bn = [batch_norm(f"{n}_expand_BN{t}") for t in tag]
            self.expand_relu = [relu6(f"{n}_expand_relu{t}") for t in tag]
        self.depthwise = [depthwise(self.kernel_size, self.stride, f"{n}_depthwise{t}")
                          for t in tag]
        self.depthwise_bn = [batch_norm(f"{n}_depthwise_BN{t}") for t in tag]
        self.depthwise_relu = [relu6(f"{n}_depthwise_relu{t}") for t in tag]
        self.project = [pointwise(self.filters, f"{n}_project{t}") for t in tag]
        self.project_bn = [batch_norm(f"{n}_project_BN{t}") for t in tag]
        self.sums = [layers.Add(name=f"{n}_sum{g}") for g in range(1, self.groups)]
        self.residual = layers.Add(name=f"{n}_add") if self._residual(input_shape) else None
        super().build(input_shape)

    def call(self, inputs):
        total = None
        for g in range(self.groups):
            x = inputs
            if self.expansion != 1:
                x = self.expand_relu[g](self.expand_bn[g](self.expand[g](x)))
            x = self.depthwise_relu[g](self.depthwise_bn[g](self.depthwise[g](x)))
            x = self.project_bn[g](self.project[g](x))
            total = x if total is None else self.sums[g - 1]([total, x])
        return self.residual([inputs, total]) if self.residual is not None else total

    # ---- weights of the equivalent groups=1 block ----------------------------------

    def standard_weights(self):
        """This block's weights as those of the equivalent ungrouped (groups=1) block.

        Returns a dict: ``expand``: kernel (1, 1, Cin, E) (absent when expansion == 1),
        ``depthwise``: kernel (k, k, E, 1), ``project``: kernel (1, 1, E, filters), and
        ``expand_bn`` / ``depthwise_bn`` / ``project_bn``: dicts of gamma, beta,
        moving_mean, moving_variance. Equivalent in inference mode; where the group
        project BNs have different scales, the scales are folded into the project
        kernels and the merged project BN is the identity plus the summed offset.
        """
        weights = {}
        if self.expansion != 1:
            weights["expand"] = np.concatenate([c.kernel.numpy() for c in self.expand], axis=3)
            weights["expand_bn"] = _concat_bn(self.expand_bn)
        weights["depthwise"] = np.concatenate(
            [c.depthwise_kernel.numpy() for c in self.depthwise], axis=2)
        weights["depthwise_bn"] = _concat_bn(self.depthwise_bn)
        kernels = [c.kernel.numpy() for c in self.project]
        bns = [_bn(b) for b in self.project_bn]
        same_scale = all(np.array_equal(b["gamma"], bns[0]["gamma"])
                         and np.array_equal(b["moving_variance"], bns[0]["moving_variance"])
                         for b in bns)
        if same_scale:
            project_bn = dict(bns[0], beta=sum(b["beta"] for b in bns),
                              moving_mean=sum(b["moving_mean"] for b in bns))
        else:
            scales = [b["gamma"] / np.sqrt(b["moving_variance"] + BN_EPSILON) for b in bns]
            kernels = [k * s for k, s in zip(kernels, scales)]
            offset = sum(b["beta"] - b["moving_mean"] * s for b, s in zip(bns, scales))
            ones = np.ones_like(offset)
            project_bn = dict(gamma=ones, beta=offset, moving_mean=np.zeros_like(offset),
                              moving_variance=ones - BN_EPSILON)
        weights["project"] = np.concatenate(kernels, axis=2)
        weights["project_bn"] = project_bn
        return weights

    def set_standard_weights(self, weights):
        """Load the weights of an ungrouped block (as ``standard_weights`` returns them).

        Channel slices go to each group; every group gets the project BN's gamma and
        variance, group 0 its beta and mean, the others zeros, so in inference the sum
        of the group projections equals the ungrouped projection.
        """
        if not self.built:
            raise TinyVisionError(f"{self.name}: build the block before setting its weights")
        bounds = np.cumsum([0] + self.group_channels)
        slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        for g, s in enumerate(slices):
            if self.expansion != 1:
                self.expand[g].kernel.assign(weights["expand"][..., s])
                _set_bn(self.expand_bn[g], {k: v[s] for k, v in weights["expand_bn"].items()})
            self.depthwise[g].depthwise_kernel.assign(weights["depthwise"][:, :, s, :])
            _set_bn(self.depthwise_bn[g], {k: v[s] for k, v in weights["depthwise_bn"].items()})
            self.project[g].kernel.assign(weights["project"][:, :, s, :])
            bn = dict(weights["project_bn"])
            if g > 0:
                bn["beta"] = np.zeros_like(bn["beta"])
                bn["moving_mean"] = np.zeros_like(bn["moving_mean"])
            _set_bn(self.project_bn[g], bn)

    def get_config(self):
        config = super().get_config()
        config["groups"] = self.groups
        return config


_BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


def _bn(layer):
    return {k: getattr(layer, k).numpy() for k in _BN_KEYS}


def _concat_bn(bn_layers):
    per_layer = [_bn(b) for b in bn_layers]
    return {k: np.concatenate([p[k] for p in per_layer]) for k in _BN_KEYS}


def _set_bn(layer, values):
    for k in _BN_KEYS:
        getattr(layer, k).assign(values[k])
