"""Graph passes over ``converters.ir``: each rewrites a ``Graph``/``Model`` in place and reports what it did."""
from converters.passes.channel_split import (
    SplitResult,
    channel_group_ops,
    choose_parts,
    group_bounds,
    pair_parts,
    pooled_convolution_at,
    pooled_convolutions,
    split_pooled_convolutions,
    split_pooled_convolutions_tflite,
    split_strided_expansions,
)
from converters.passes.reorder import (
    ReorderResult,
    live_bytes_per_op,
    peak_live_bytes,
    reorder_graph,
    reorder_model,
    reorder_tflite,
)

__all__ = [
    "ReorderResult",
    "SplitResult",
    "channel_group_ops",
    "choose_parts",
    "group_bounds",
    "live_bytes_per_op",
    "pair_parts",
    "peak_live_bytes",
    "pooled_convolution_at",
    "pooled_convolutions",
    "reorder_graph",
    "reorder_model",
    "reorder_tflite",
    "split_pooled_convolutions",
    "split_pooled_convolutions_tflite",
    "split_strided_expansions",
]
