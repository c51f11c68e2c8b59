"""PatchTunnel: one path of bottleneck blocks per patch, merged only at the very end."""
from tinyvision.errors import TinyVisionError
from tinyvision.layers._common import (Composite, batch_norm, layers, pair, pointwise,
                                       register, relu6)
from tinyvision.layers.bottleneck import ReorderedBottleneck

_BLOCK_KEYS = {"filters", "expansion", "stride", "kernel_size", "groups"}

# TFLM's CONCATENATION kernel prepares at most kMaxInputNum = 10 inputs (tflite-micro,
# tensorflow/lite/micro/kernels/concatenation.cc: Prepare fails on more, and the model
# does not load). The merge is therefore a tree of concatenations of at most 10 inputs
# each; 10, not less, keeps the tree as shallow as it can be (17 tunnels: 2 levels).
MAX_MERGE_INPUTS = 10


def _check_fan_in(fan_in):
    if not (isinstance(fan_in, int) and fan_in >= 2):
        raise TinyVisionError(f"max_merge_inputs must be an int >= 2, got {fan_in!r}")


def merge_groups(n, fan_in=MAX_MERGE_INPUTS):
    """The concatenation tree merging ``n`` inputs, at most ``fan_in`` per concatenation.

    Returns one list per level, leaves first, of the number of inputs each concatenation
    of that level takes, balanced and in order: ``merge_groups(17) == [[9, 8], [2]]``,
    ``merge_groups(5) == [[5]]``; ``[]`` for one input (no merge).
    """
    _check_fan_in(fan_in)
    levels = []
    while n > 1:
        count = -(-n // fan_in)
        levels.append([n // count + (1 if k < n % count else 0) for k in range(count)])
        n = count
    return levels


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
    ``[i*C, (i+1)*C)``), ready for a Dense head. The concatenation is a tree of
    concatenations of at most ``max_merge_inputs`` inputs each (``merge_groups``),
    because TFLM's CONCATENATION takes at most 10; it is the same vector as one flat
    concatenation. The tree reuses ONE Concatenate layer, so that QAT (tfmot) gives all
    its concatenations one output quantizer: after int8 conversion every level has the
    same scale and the merge is a plain copy, with no requantizing QUANTIZE between
    levels (which separate layers get, each with its own range). Post-training
    quantization gives nested concatenations one scale either way.

    Args:
      blocks: list of dicts of ReorderedBottleneck arguments
        (filters, expansion, stride, kernel_size, groups), in order.
      stem_filters, stem_kernel, stem_stride: the stem conv.
      last_filters: channels of a final 1x1 conv, or None for none.
      shared: one set of weights used by every tunnel (True), or one set per tunnel.
      n_tunnels: number of patches; optional, taken from the input when built.
      max_merge_inputs: most inputs of one Concatenate in the merge (TFLM: 10).

    Sublayers are named ``{name}_stem``, ``{name}_b{j}``, ... (shared) or
    ``{name}_t{i}_stem``, ... (independent), and ``{name}_merge`` (the Concatenate).
    """

    def __init__(self, blocks, stem_filters=16, stem_kernel=3, stem_stride=2,
                 last_filters=None, shared=True, n_tunnels=None,
                 max_merge_inputs=MAX_MERGE_INPUTS, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [_block_spec(b) for b in blocks]
        self.stem_filters = stem_filters
        self.stem_kernel = pair(stem_kernel, "stem_kernel")
        self.stem_stride = pair(stem_stride, "stem_stride")
        self.last_filters = last_filters
        self.shared = bool(shared)
        self.n_tunnels = n_tunnels
        _check_fan_in(max_merge_inputs)
        self.max_merge_inputs = max_merge_inputs

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
        # level by level; a group of one input (possible only with max_merge_inputs = 2)
        # passes through
        for sizes in merge_groups(len(features), self.max_merge_inputs):
            starts = [sum(sizes[:k]) for k in range(len(sizes))]
            features = [self.merge(features[s:s + size]) if size > 1 else features[s]
                        for s, size in zip(starts, sizes)]
        return features[0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape) * self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(blocks=[dict(b) for b in self.blocks], stem_filters=self.stem_filters,
                      stem_kernel=self.stem_kernel, stem_stride=self.stem_stride,
                      last_filters=self.last_filters, shared=self.shared,
                      n_tunnels=self.n_tunnels, max_merge_inputs=self.max_merge_inputs)
        return config
