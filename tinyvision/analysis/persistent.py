"""What TFLM's persistent arena (the tail) holds: per kind, as TFLM records it, and per operator.

TFLM keeps a model's persistent data for as long as its interpreter lives: tensor structs, node
structs and each kernel's op data (per-channel output multipliers and shifts: 8 B per output
channel of a convolution). The per-operator figure is measured, not modelled: the model cut after
each operator (``prefix_tails_job``: its first k operators, the last one's outputs as the model's
outputs) is allocated on TFLM, and operator k gets the tail bytes its prefix adds to the previous
one's (operator 0 also carries what any model costs: the subgraph's own structures).
"""
from tinyvision.runtime import isolated

_HERE = "tinyvision.analysis.persistent"


def persistent_per_op(model_bytes, name="model", timeout=None):
    """TFLM's tail bytes each operator of a single-subgraph model adds (a list in op order), or None for a
    model of several subgraphs (their operators are not cut one by one)."""
    return isolated.call(f"{_HERE}:prefix_tails_job", bytes(model_bytes), name, timeout=timeout,
                         task=f"measuring the persistent bytes per operator of {name}", who="TFLM")


def prefix_tails_job(model_bytes, name):
    from converters.ir import Model
    from tinyvision.runtime import tflm

    model = Model.from_bytes(model_bytes, name)
    if len(model.subgraphs) != 1:
        return None
    graph = model.main
    ops, outputs = graph.ops, graph.outputs
    model.metadata.clear()  # an offline plan indexes the whole model's tensors
    tails = []
    try:
        for k in range(1, len(ops) + 1):
            graph.ops = ops[:k]
            graph.outputs = outputs if k == len(ops) else [t for t in ops[k - 1].outputs if t is not None]
            interpreter = tflm.open_interpreter(model.to_bytes(), None, f"{name} up to op {k - 1}")
            tails.append(tflm.arena_report(interpreter).tail_bytes)
            del interpreter
    finally:
        graph.ops, graph.outputs = ops, outputs
    return [tail - before for tail, before in zip(tails, [0] + tails[:-1])]
