"""Static analysis of .tflite models (no TFLM run): arena plan, live memory, MACs and weights per op.

``memory.memory_profile`` replicates TFLM's lifetimes and GreedyMemoryPlanner (its head
matches TFLM's measured head); ``cost.model_cost`` counts MACs/params/flash per op;
``plot.plot_memory`` draws live memory per op. Models are .tflite bytes or
``converters.ir.Model`` objects.
"""
from tinyvision.analysis.cost import ModelCost, OpCost, model_cost, op_macs
from tinyvision.analysis.memory import Buffer, MemoryProfile, OpMemory, greedy_offsets, memory_profile, plan_buffers
from tinyvision.analysis.plot import plot_memory

__all__ = [
    "Buffer", "MemoryProfile", "ModelCost", "OpCost", "OpMemory", "greedy_offsets", "memory_profile",
    "model_cost", "op_macs", "plan_buffers", "plot_memory",
]
