"""Training: float training then quantization-aware fine-tuning (tfmot) under a tf.distribute strategy."""
from tinyvision.training.strategies import STRATEGIES, make_strategy
from tinyvision.training.trainer import TrainResult, quantize, train

__all__ = ["STRATEGIES", "TrainResult", "make_strategy", "quantize", "train"]
