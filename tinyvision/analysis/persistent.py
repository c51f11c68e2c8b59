"""What TFLM's persistent arena (the tail) holds per operator.

TFLM keeps a model's persistent data for as long as its interpreter lives: tensor structs, node
structs and each kernel's op data (per-channel output multipliers and shifts: 8 B per output
channel of a convolution); ``tflm.ArenaReport.persistent_kinds`` has it by kind. The per-operator
figure is measured, not modelled: the model cut after each operator (its first k operators, the
last one's outputs as the model's outputs) is allocated on TFLM, and operator k gets the tail bytes
its prefix adds to the previous one's (operator 0 also carries what any model costs: the
subgraph's own structures).
"""
from converters.ir import Model
from tinyvision.runtime import tflm

# Prefix models sent to one TFLM subprocess at most (a 224 px MobileNetV2 has 84 prefixes of up to 4 MB).
BATCH_BYTES = 64 << 20


def persistent_per_op(model_bytes, name="model", timeout=None):
    """TFLM's tail bytes each operator of a single-subgraph model adds (a list in op order), or None for a
    model of several subgraphs (their operators are not cut one by one)."""
    model = Model.from_bytes(model_bytes, name)
    if len(model.subgraphs) != 1:
        return None
    tails, batch = [], []
    for prefix in _prefixes(model, name):
        batch.append(prefix)
        if sum(len(data) for _, data in batch) >= BATCH_BYTES:
            tails += tflm.allocation_tails(batch, timeout=timeout)
            batch = []
    if batch:
        tails += tflm.allocation_tails(batch, timeout=timeout)
    return [tail - before for tail, before in zip(tails, [0] + tails[:-1])]


def _prefixes(model, name):
    """(name, .tflite bytes) of the model cut after each operator, in op order (``model`` is left as it was)."""
    graph = model.main
    ops, outputs = graph.ops, graph.outputs
    model.metadata.clear()  # an offline plan indexes the whole model's tensors
    try:
        for k in range(1, len(ops) + 1):
            graph.ops = ops[:k]
            graph.outputs = outputs if k == len(ops) else [t for t in ops[k - 1].outputs if t is not None]
            yield f"{name} up to op {k - 1}", model.to_bytes()
    finally:
        graph.ops, graph.outputs = ops, outputs
