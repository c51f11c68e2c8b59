"""Independent validation of a ``MemoryPlan`` before anything is written from it.

TFLM applies offline offsets blindly (it never checks them for overlap), so a
wrong plan silently corrupts activations. ``check_plan`` recomputes lifetimes
and the allowed in-place pairs from the graph itself, not from the planner's
bookkeeping, and raises ``TinyVisionError`` naming the two buffers of the
first conflict.
"""
from converters.planning.lifetimes import ALIGNMENT, in_place_candidates, tensor_lifetimes
from tinyvision.errors import TinyVisionError


class _Item:
    __slots__ = ("label", "offset", "size", "first", "last", "key")

    def __init__(self, label, offset, size, first, last, key):
        self.label, self.offset, self.size, self.first, self.last, self.key = label, offset, size, first, last, key

    @property
    def end(self):
        return self.offset + self.size

    def describe(self):
        return f"{self.label} [{self.offset}, {self.end}) live in scopes {self.first}-{self.last}"


def check_plan(plan, name=None):
    """Raise TinyVisionError unless ``plan`` is safe to hand to TFLM.

    Checks: every tensor TFLM plans has an offset and nothing else has one; offsets are
    16-byte aligned and non-negative; every buffer (tensors and scratch) lies inside
    ``plan.region`` and outside ``plan.reserved``; pins are kept; declared in-place pairs
    are legal for their op and share exactly one buffer; no other two buffers alive in
    the same scope share a byte; ``plan.size`` is the highest end. Returns None.
    """
    graph = plan.graph
    name = name or graph.name or "graph"
    lifetimes = tensor_lifetimes(graph)
    planned = {lt.tensor for lt in lifetimes}
    for t in plan.offsets:
        if t not in planned:
            raise TinyVisionError(f"{name}: the plan gives an offset to {t.name!r}, which TFLM does not plan")
    items = []
    for lt in lifetimes:
        if lt.tensor not in plan.offsets:
            raise TinyVisionError(f"{name}: the plan has no offset for tensor {lt.tensor.name!r}")
        offset = plan.offsets[lt.tensor]
        items.append(_Item(f"tensor {lt.tensor.name!r}", offset, lt.size, lt.first, lt.last, lt.tensor))
    for s in plan.scratch:
        opcode = graph.ops[s.op_index].opcode
        items.append(_Item(f"scratch buffer {s.index} of op {s.op_index} ({opcode})", s.offset, s.size, s.first,
                           s.last, s))

    least_shift = {(c.output, c.input): c.shift for c in in_place_candidates(graph, lifetimes)}
    shared = set()
    for pair in plan.in_place:
        if (pair.output, pair.input) not in least_shift:
            raise TinyVisionError(
                f"{name}: op {pair.op_index} may not write {pair.output.name!r} in place of {pair.input.name!r}"
            )
        shift = plan.offsets[pair.input] - plan.offsets[pair.output]
        if shift != pair.shift or shift < least_shift[(pair.output, pair.input)]:
            raise TinyVisionError(
                f"{name}: in-place tensors {pair.output.name!r} and {pair.input.name!r} are {shift} bytes apart; "
                f"op {pair.op_index} needs the input {least_shift[(pair.output, pair.input)]} bytes above the output"
            )
        shared.add(frozenset((pair.output, pair.input)))

    for item in items:
        if item.offset < 0 or item.offset % ALIGNMENT:
            raise TinyVisionError(f"{name}: {item.describe()} is not at a non-negative multiple of {ALIGNMENT}")
        if plan.region is not None and item.end > plan.region:
            raise TinyVisionError(f"{name}: {item.describe()} ends beyond the {plan.region}-byte region")
        for start, end in plan.reserved:
            if item.offset < end and start < item.end:
                raise TinyVisionError(f"{name}: {item.describe()} uses the reserved range [{start}, {end})")
    for t, offset in plan.pinned.items():
        if plan.offsets.get(t) != offset:
            raise TinyVisionError(
                f"{name}: tensor {t.name!r} is pinned at {offset} but planned at {plan.offsets.get(t)}"
            )

    items.sort(key=lambda item: item.offset)
    for n, a in enumerate(items):
        for b in items[n + 1:]:
            if b.offset >= a.end:
                break
            if a.first > b.last or b.first > a.last:
                continue
            if frozenset((a.key, b.key)) in shared:
                continue
            raise TinyVisionError(
                f"{name}: memory plan overlaps {a.describe()} and {b.describe()}"
            )
    highest = max([item.end for item in items] + [0])
    if plan.size != highest:
        raise TinyVisionError(f"{name}: plan size {plan.size} is not the highest buffer end {highest}")
