"""One analysis of a .tflite: TFLM's arena, the analytic profile, costs and checks, as a dict.

The CLI prints it as a table or JSON; benchmarks read the same dict.
"""
from converters.ir import Model
from tinyvision.analysis.cost import model_cost
from tinyvision.analysis.memory import memory_profile
from tinyvision.runtime import tflm


def analyze_tflite(model_bytes, name="model", verify=True, search_min_arena=True, persistent_ops=True):
    """Measure ``model_bytes`` on TFLM (subprocess) and analytically; return a JSON-ready dict.

    Keys: head_bytes, tail_bytes, total_bytes (TFLM's print_allocations), min_arena_bytes (smallest
    arena TFLM runs with), analytic_head_bytes (replica of TFLM's greedy planner), board_head_bytes
    and board_arena_bytes (the same with the board's CMSIS-NN scratch: ``board_arena_bytes``), peak_live_bytes
    (the largest set of buffers alive at one operator, counted apart: an offline plan that lets an
    output overlap its dying input, as ``convert``'s does, goes below it), macs, params, flash_bytes,
    reference ("TFLM": what rewrites are checked against), tflite_interpreter (``tflite_agreement`` on
    random input, a fact about the model), per_channel_dense (warnings), persistent_kinds (TFLM's tail by
    kind: {kind: bytes}), instructions (Cortex-M4F instructions of one inference on the board's TFLM
    library, estimated: ``tinyvision.analysis.latency``), ops (per-operator rows; their persistent_bytes, with
    ``persistent_ops``, are what each operator adds to TFLM's tail: ``tinyvision.analysis.persistent``; their
    instructions estimated).
    """
    from converters.patching.edges import int8_core
    from converters.quantize import per_channel_fully_connected
    from tinyvision.analysis.latency import default_model

    model = Model.from_bytes(model_bytes, name=name)
    tflm.require_int8(int8_core(model)[0], name)  # a float input QUANTIZE / output DEQUANTIZE is fine
    report = tflm.measure(model_bytes, name=name)
    profile = memory_profile(model, name)
    board_head = memory_profile(model, name, kernels="cmsis_nn").head_bytes
    cost = model_cost(model, name)
    min_arena = tflm.min_arena_bytes(model_bytes, name=name) if search_min_arena else None
    per_op = _persistent_per_op(model_bytes, name) if persistent_ops else None
    instructions = [round(default_model().op(op)) for op in model.main.ops]
    result = {
        "model": name,
        "head_bytes": report.head_bytes,
        "tail_bytes": report.tail_bytes,
        "total_bytes": report.total_bytes,
        "min_arena_bytes": min_arena,
        "analytic_head_bytes": profile.head_bytes,
        "board_head_bytes": board_head,
        "board_arena_bytes": None if min_arena is None else board_arena_bytes(min_arena, profile.head_bytes,
                                                                               board_head),
        "peak_live_bytes": profile.peak_bytes,
        "macs": cost.macs,
        "params": cost.params,
        "flash_bytes": len(model_bytes),
        "weight_bytes": cost.weight_bytes,
        "reference": "TFLM",
        "tflite_interpreter": tflite_agreement(model_bytes, name) if verify else None,
        "per_channel_dense": [str(w) for w in per_channel_fully_connected(model_bytes)],
        "persistent_kinds": {kind: size for kind, size, _ in report.persistent_kinds},
        "instructions": sum(instructions),
        "ops": [
            {"index": m.index, "opcode": m.opcode, "output": m.output, "live_bytes": m.live_bytes,
             "persistent_bytes": None if per_op is None else per_op[m.index],
             "macs": c.macs, "flash_bytes": c.flash_bytes, "shape": _output_shape(model.main.ops[m.index]),
             "instructions": instructions[m.index]}
            for m, c in zip(profile.ops, cost.ops)
        ],
    }
    return result, profile


def _persistent_per_op(model_bytes, name):
    """``persistent_per_op``, or None where a prefix of the model does not load on TFLM (the whole model does:
    the breakdown is left out rather than the analysis)."""
    from tinyvision.analysis.persistent import persistent_per_op
    from tinyvision.errors import TinyVisionError

    try:
        return persistent_per_op(model_bytes, name)
    except TinyVisionError:
        return None


def tflite_agreement(model_bytes, name="model"):
    """Whether tf.lite.Interpreter agrees with TFLM on the model: {"verdict": "agrees" | "differs" |
    "refuses", "detail": one line}. A fact about the model: TFLM, which runs it on the board, is the
    reference every tinyvision rewrite is checked against."""
    check = tflm.compare(model_bytes, name=name)
    return {"verdict": check.verdict, "detail": check.detail}


def _output_shape(op):
    outputs = [t for t in op.outputs if t is not None]
    return [int(d) for d in outputs[0].shape] if outputs else []


def board_arena_bytes(min_arena, host_head, board_head):
    """Arena bytes for the Nano 33 BLE: TFLM's smallest arena on the host plus the head the board's
    CMSIS-NN kernel scratch adds (``memory_profile(kernels="cmsis_nn")``, checked against the Arduino
    libraries on a Cortex-M4). The host's persistent tail, with 64-bit pointers, is larger than the
    32-bit board's, so the host's tail covers the board's."""
    return min_arena + max(0, board_head - host_head)


def board_arena(model_bytes, name="model"):
    """(``board_arena_bytes``, TFLM's smallest arena on the host) for ``model_bytes``."""
    model = Model.from_bytes(model_bytes, name=name)
    min_arena = tflm.min_arena_bytes(model_bytes, name=name)
    board_head = memory_profile(model, name, kernels="cmsis_nn").head_bytes
    return board_arena_bytes(min_arena, memory_profile(model, name).head_bytes, board_head), min_arena


def format_table(result):
    """Human-readable text of ``analyze_tflite``'s dict."""
    from tinyvision.runtime.board import BOARD_HZ

    lines = [f"{'#':>4} {'op':<20} {'live B':>10} {'persist. B':>10} {'MACs':>12} {'output shape':>16}  output"]
    for row in result["ops"]:
        shape = "x".join(map(str, row["shape"]))
        persistent = "-" if row["persistent_bytes"] is None else f"{row['persistent_bytes']:,}"
        lines.append(f"{row['index']:>4} {row['opcode']:<20} {row['live_bytes']:>10,} {persistent:>10} "
                     f"{row['macs']:>12,} {shape:>16}  {row['output']}")
    lines.append("")
    lines.append(f"TFLM arena: head {result['head_bytes']:,} B (analytic {result['analytic_head_bytes']:,}, "
                 f"largest live set {result['peak_live_bytes']:,}), tail {result['tail_bytes']:,} B, "
                 f"total {result['total_bytes']:,} B")
    if result["persistent_kinds"]:
        lines.append("TFLM tail by kind: " + ", ".join(f"{kind} {size:,} B"
                                                       for kind, size in result["persistent_kinds"].items()))
    if result["min_arena_bytes"] is not None:
        lines.append(f"smallest arena_size that runs: {result['min_arena_bytes']:,} B; on the Nano 33 BLE "
                     f"(CMSIS-NN scratch, head {result['board_head_bytes']:,} B): {result['board_arena_bytes']:,} B")
    lines.append(f"MACs {result['macs']:,}, params {result['params']:,}, flash {result['flash_bytes']:,} B")
    lines.append(f"Cortex-M4F (board's TFLM, CMSIS-NN): about {result['instructions'] / 1e6:.1f} M instructions per "
                 f"inference, estimated ({result['instructions'] / BOARD_HZ * 1e3:.0f} ms at 64 MHz at best)")
    tflite = result["tflite_interpreter"]
    if tflite is not None:
        lines.append(f"reference: {result['reference']}; tf.lite.Interpreter {tflite['verdict']} "
                     f"({tflite['detail']})" if tflite["verdict"] != "agrees" else
                     f"reference: {result['reference']}; tf.lite.Interpreter agrees bit for bit")
    for warning in result["per_channel_dense"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
