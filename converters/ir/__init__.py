"""A small graph IR over TFLite models: import, rewrite in passes, export."""
import tinyvision  # noqa: F401  (sets the Keras environment before TensorFlow loads)
from converters.ir.graph import Graph, Model, Op, Quantization, SignatureDef, Tensor

__all__ = ["Graph", "Model", "Op", "Quantization", "SignatureDef", "Tensor"]
