"""PatchTunnel: one path of bottleneck blocks per patch, merged only at the very end."""
from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import (Composite, batch_norm, layers, pair, pointwise,
                                       register, relu6)
from tinyvision.layers.bottleneck import ReorderedBottleneck

_BLOCK_KEYS = {"filters", "expansion", "stride", "kernel_size", "groups"}


def _block_spec(spec):
    spec = dict(spec)
    unknown = set(spec) - _BLOCK_KEYS
    if unknown or "filters" not in spec:
        raise TinyVisionError(
            f"tunnel block {spec!r}: needs 'filters', may have {sorted(_BLOCK_KEYS)}")
    return spec


@register
class PatchTunnel(Composite):
    """Independent per-patch paths ("tunnels") through the whole network, then a merge.

    Input: a list of n patches ``(B, h_i, w_i, Cin)`` (e.g. from InputSegmentation).
    Each tunnel: stem Conv kxk (stride) + BN + ReLU6 -> ReorderedBottleneck blocks ->
    optional 1x1 Conv + BN + ReLU6 to ``last_filters`` -> GlobalAveragePooling2D, giving
    ``(B, C)`` with C = last_filters or the last block's filters. Nothing crosses
    between tunnels before the merge, so each can run alone in a patch-sized arena.
    Output: the n pooled vectors concatenated, ``(B, n * C)`` (tunnel i in columns
    ``[i*C, (i+1)*C)``), ready for a Dense head.

    Args:
      blocks: list of dicts of ReorderedBottleneck arguments
        (filters, expansion, stride, kernel_size, groups), in order.
      stem_filters, stem_kernel, stem_stride: the stem conv.
      last_filters: channels of a final 1x1 conv, or None for none.
      shared: one set of weights used by every tunnel (True), or one set per tunnel.
      n_tunnels: number of patches; optional, taken from the input when built.

    Sublayers are named ``{name}_stem``, ``{name}_b{j}``, ... (shared) or
    ``{name}_t{i}_stem``, ... (independent).
    """

    def __init__(self, blocks, stem_filters=16, stem_kernel=3, stem_stride=2,
                 last_filters=None, shared=True, n_tunnels=None, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [_block_spec(b) for b in blocks]
        self.stem_filters = stem_filters
        self.stem_kernel = pair(stem_kernel, "stem_kernel")
        self.stem_stride = pair(stem_stride, "stem_stride")
        self.last_filters = last_filters
        self.shared = bool(shared)
        self.n_tunnels = n_tunnels

    @property
    def out_channels(self):
        """C, the pooled channels per tunnel."""
        if self.last_filters:
            return self.last_filters
        return self.blocks[-1]["filters"] if self.blocks else self.stem_filters

    def _path(self, prefix):
        path = [layers.Conv2D(self.stem_filters, self.stem_kernel, strides=self.stem_stride,
                              padding="same", use_bias=False, name=f"{prefix}_stem"),
                batch_norm(f"{prefix}_stem_BN"), relu6(f"{prefix}_stem_relu")]
        path += [ReorderedBottleneck(**spec, name=f"{prefix}_b{j}")
                 for j, spec in enumerate(self.blocks)]
        if self.last_filters:
            path += [pointwise(self.last_filters, f"{prefix}_last"),
                     batch_norm(f"{prefix}_last_BN"), relu6(f"{prefix}_last_relu")]
        path.append(layers.GlobalAveragePooling2D(name=f"{prefix}_pool"))
        return path

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)):
            raise TinyVisionError(f"{self.name} takes a list of patches, got one tensor")
        if self.n_tunnels not in (None, len(input_shape)):
            raise TinyVisionError(
                f"{self.name} was configured for {self.n_tunnels} tunnels, got {len(input_shape)}")
        self.n_tunnels = len(input_shape)
        prefixes = ([self.name] if self.shared
                    else [f"{self.name}_t{i}" for i in range(self.n_tunnels)])
        # One flat list: Keras' .keras format restores layers in lists, not in nested lists.
        self.path_layers = [layer for p in prefixes for layer in self._path(p)]
        self.merge = layers.Concatenate(name=f"{self.name}_merge") if self.n_tunnels > 1 else None
        super().build(input_shape)

    def path(self, i):
        """The layers of tunnel ``i``, stem to pooling (the same list for all when shared)."""
        length = len(self.path_layers) // (1 if self.shared else self.n_tunnels)
        start = 0 if self.shared else i * length
        return self.path_layers[start:start + length]

    def call(self, inputs):
        features = []
        for i, x in enumerate(inputs):
            for layer in self.path(i):
                x = layer(x)
            features.append(x)
        return self.merge(features) if self.merge is not None else features[0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape) * self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(blocks=[dict(b) for b in self.blocks], stem_filters=self.stem_filters,
                      stem_kernel=self.stem_kernel, stem_stride=self.stem_stride,
                      last_filters=self.last_filters, shared=self.shared,
                      n_tunnels=self.n_tunnels)
        return config
