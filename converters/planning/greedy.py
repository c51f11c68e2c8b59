"""A line-for-line model of TFLM's ``GreedyMemoryPlanner`` (memory_planner/greedy_memory_planner.cc).

The project's one model of it, used three times: to know what TFLM's own
planner would reach (the baseline an offline plan must beat), to know where
TFLM will put the buffers an offline plan cannot fix, i.e. kernel scratch
buffers, which TFLM plans online *around* the offline offsets, and for the
analytic arena head of any model (``tinyvision.analysis.memory``).

Algorithm (as in TFLM): offline-planned buffers first, in the order they were
added, at their given offsets; then online buffers sorted by size, largest
first, with TFLM's stable bubble sort over the online buffers stored in
*reverse* order of addition (so equal sizes go last-added first); each online
buffer goes into the first gap, walking the offset-ordered list of placed
buffers that overlap it in time, that is large enough, or after the last one.
"""
import bisect
import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Request:
    """One buffer as TFLM's planner sees it: byte size, inclusive scopes, fixed offset or None."""

    size: int
    first: int
    last: int
    offline: Optional[int] = None


def _overlap(a, b):
    return not (a.first > b.last or b.first > a.last)


def plan(requests):
    """Offsets TFLM would give ``requests`` (in TFLM's order of addition) and its head size.

    Returns (offsets, head): offsets[i] for requests[i]; head = max(offset + size), 0 if none.
    """
    n = len(requests)
    if n == 0:
        return [], 0
    offline = [i for i, r in enumerate(requests) if r.offline is not None]
    online = [i for i, r in enumerate(requests) if r.offline is None][::-1]
    # ReverseSortInPlace is a stable sort by size, descending.
    online.sort(key=lambda i: -requests[i].size)
    order = offline + online
    offsets = [None] * n
    placed = []  # (offset, insertion sequence, request index), kept sorted like TFLM's linked list
    for k, i in enumerate(order):
        r = requests[i]
        if r.offline is not None:
            offset = r.offline
        else:
            offset = 0
            for other_offset, _, j in placed:
                other = requests[j]
                if not _overlap(r, other):
                    continue
                if other_offset - offset >= r.size:
                    break
                offset = max(offset, other_offset + other.size)
        offsets[i] = offset
        _insert(placed, offset, k, i)
    head = max(offsets[i] + requests[i].size for i in range(n))
    return offsets, head


def _insert(placed, offset, seq, index):
    """Insert before the first entry with a larger offset, as TFLM links a new entry in."""
    placed.insert(bisect.bisect_right(placed, offset, key=lambda entry: entry[0]), (offset, seq, index))
