"""Offline placement of buffers with lifetimes into one region (dynamic storage allocation).

The graph-free core of the planner: ``Block``s with a byte size and inclusive
lifetime ``[first, last]`` get offsets so that blocks alive at the same time
never share bytes, avoiding ``reserved`` byte ranges (alive all the time) and
keeping ``pin``ned blocks at their offsets. ``online`` blocks stand for kernel
scratch buffers, which TFLM places itself at run time around the offline
offsets: the heuristics leave room for them, then their real offsets come from
``greedy.plan`` (TFLM's algorithm), and that is what a candidate is judged on.
A block may hold several buffers (``parts``: tensors sharing memory in place);
TFLM sees those one by one, so online placement and its checks use the parts.

Search (``pack``): the lower bound is the largest sum of live bytes over
scopes (reserved bytes counted as always live); candidates are

* ``two-sided`` when at most two blocks are ever live together (a chain of
  ops): 2-colour the interval graph, one colour from the bottom, the other
  against the top of the lower-bound-sized window, which always meets the bound;
* greedy placement in several orders (by size, TFLM's own order, by lifetime
  length, by size x length, by start, peak-live blocks first), each with
  first-fit and best-fit gap choice;
* then, unless the bound is met, a seeded local search that moves one block
  earlier in the best order and keeps changes that do not make things worse.

Every candidate is validated; the smallest (footprint, size) wins.
"""
import dataclasses
import random
from typing import Optional

import numpy as np

from converters.planning import greedy

DEFAULT_EFFORT = 200


@dataclasses.dataclass(frozen=True)
class Block:
    """A buffer to place: bytes (a multiple of the alignment), inclusive scopes, optional fixed offset.

    parts: ((offset in the block, bytes, first, last), ...) of the buffers TFLM sees inside the
        block when it holds several; empty: the block is one buffer.
    """

    size: int
    first: int
    last: int
    pin: Optional[int] = None
    online: bool = False
    parts: tuple = ()

    def buffers(self):
        """(offset in the block, bytes, first, last) of each buffer TFLM sees."""
        return self.parts or ((0, self.size, self.first, self.last),)


@dataclasses.dataclass(frozen=True)
class Packing:
    """offsets[i] for blocks[i]; size = max end of any block; footprint = max(size, end of reserved ranges)."""

    offsets: tuple
    size: int
    footprint: int
    lower_bound: int
    strategy: str


def lower_bound(blocks, reserved=()):
    """Largest live bytes in any scope (reserved ranges always live) and every pinned block's end."""
    reserved_bytes = sum(end - start for start, end in reserved)
    bound = max([end for _, end in reserved] + [b.pin + b.size for b in blocks if b.pin is not None] + [0])
    return max(bound, peak_live(blocks)[0] + reserved_bytes)


def peak_live(blocks):
    """(largest sum of sizes of blocks alive in one scope, that scope); (0, 0) without blocks."""
    if not blocks:
        return 0, 0
    lo = min(b.first for b in blocks)
    hi = max(b.last for b in blocks)
    live = np.zeros(hi - lo + 2, dtype=np.int64)
    for b in blocks:
        live[b.first - lo] += b.size
        live[b.last - lo + 1] -= b.size
    live = np.cumsum(live)
    peak = int(np.argmax(live))
    return int(live[peak]), peak + lo


def overlaps_in_time(a, b):
    return not (a.first > b.last or b.first > a.last)


def first_conflict(blocks, offsets, reserved=(), region=None):
    """The first violation of a placement as a string, or None.

    Checks: offsets non-negative, pins kept, no reserved byte used, inside ``region``,
    and no two blocks alive at the same time sharing a byte.
    """
    for i, (b, off) in enumerate(zip(blocks, offsets)):
        if off is None or off < 0:
            return f"block {i} has no valid offset ({off})"
        if b.pin is not None and off != b.pin:
            return f"block {i} is pinned at {b.pin} but placed at {off}"
        if region is not None and off + b.size > region:
            return f"block {i} [{off}, {off + b.size}) exceeds the region of {region} bytes"
        for start, end in reserved:
            if off < end and start < off + b.size:
                return f"block {i} [{off}, {off + b.size}) uses the reserved range [{start}, {end})"
    order = sorted(range(len(blocks)), key=lambda i: offsets[i])
    for n, i in enumerate(order):
        end = offsets[i] + blocks[i].size
        for j in order[n + 1:]:
            if offsets[j] >= end:
                break
            if overlaps_in_time(blocks[i], blocks[j]):
                return f"blocks {i} and {j} overlap in time and memory"
    return None


def pack(blocks, reserved=(), region=None, effort=DEFAULT_EFFORT, seed=0):
    """Place ``blocks`` (online ones last, in TFLM's order of addition) avoiding ``reserved`` [start, end) ranges.

    region: if given, a placement with a block ending above it is not a candidate.
    effort: evaluations of the local search (0 = heuristics only).
    Returns the best valid ``Packing``; raises ValueError if no candidate is valid (e.g. conflicting pins).
    """
    blocks = list(blocks)
    reserved = sorted((int(s), int(e)) for s, e in reserved if e > s)
    bound = lower_bound(blocks, reserved)
    if not blocks:
        return Packing((), 0, bound, bound, "empty")
    search = _Search(blocks, reserved, region, bound)
    search.try_two_sided()
    free = [i for i, b in enumerate(blocks) if b.pin is None]
    for name, order in _orders(blocks, free):
        for fit in ("first", "best"):
            if not search.done:
                search.try_order(order, fit, f"{name}/{fit}")
    if search.best is not None and not search.done and effort > 0 and len(free) > 1:
        search.local(effort, random.Random(seed))
    if search.best is None:
        raise ValueError(f"no valid placement: {search.last_error}")
    key, offsets, strategy = search.best
    return Packing(tuple(offsets), key[1], key[0], bound, strategy)


def _orders(blocks, free):
    length = {i: blocks[i].last - blocks[i].first + 1 for i in free}
    size = {i: blocks[i].size for i in free}
    peak_scope = peak_live(blocks)[1]
    at_peak = {i for i in free if blocks[i].first <= peak_scope <= blocks[i].last}
    # TFLM: online blocks are stored last-added first, then stably sorted by size.
    tflm = sorted(free[::-1], key=lambda i: -size[i])
    return [
        ("size", sorted(free, key=lambda i: (-size[i], -length[i], blocks[i].first))),
        ("tflm", tflm),
        ("length", sorted(free, key=lambda i: (-length[i], -size[i]))),
        ("area", sorted(free, key=lambda i: (-size[i] * length[i], -size[i]))),
        ("start", sorted(free, key=lambda i: (blocks[i].first, -size[i]))),
        ("peak", sorted(free, key=lambda i: (i not in at_peak, -size[i], -length[i]))),
    ]


class _Search:
    def __init__(self, blocks, reserved, region, bound):
        self.blocks = blocks
        self.reserved = reserved
        self.region = region
        self.bound = bound
        self.best = None  # ((footprint, size), offsets, strategy)
        self.best_order = None
        self.best_fit = None
        self.last_error = "no candidate tried"
        self.first = np.array([b.first for b in blocks], dtype=np.int64)
        self.last = np.array([b.last for b in blocks], dtype=np.int64)
        self.size = np.array([b.size for b in blocks], dtype=np.int64)
        self.online = [i for i, b in enumerate(blocks) if b.online]
        self.reserved_end = max([e for _, e in reserved] + [0])
        self.size_bound = max([peak_live(blocks)[0]] + [b.pin + b.size for b in blocks if b.pin is not None])

    @property
    def done(self):
        """The footprint meets its bound, and the size meets the blocks' own bound or is the footprint."""
        if self.best is None:
            return False
        footprint, size = self.best[0]
        return footprint <= self.bound and (size <= self.size_bound or size == footprint)

    def consider(self, offsets, strategy, order=None, fit=None):
        """Validate a full placement (after TFLM re-places online blocks); keep it if it is the best so far."""
        offsets = self._tflm_online(list(offsets))
        offline = [i for i, b in enumerate(self.blocks) if not b.online]
        error = (first_conflict([self.blocks[i] for i in offline], [offsets[i] for i in offline], self.reserved,
                                self.region)
                 or self._online_conflict(offsets))
        if error is not None:
            self.last_error = f"{strategy}: {error}"
            return None
        size = max([o + b.size for o, b in zip(offsets, self.blocks)] + [0])
        key = (max(size, self.reserved_end), size)
        if self.best is None or key < self.best[0]:
            self.best = (key, offsets, strategy)
            self.best_order, self.best_fit = order, fit
        return key

    def _offline_buffers(self, offsets):
        """Block((bytes, first, last)) and offset of every buffer TFLM sees in the offline blocks."""
        return [(Block(size, first, last), offsets[i] + at)
                for i, b in enumerate(self.blocks) if not b.online
                for at, size, first, last in b.buffers()]

    def _tflm_online(self, offsets):
        if not self.online:
            return offsets
        fixed = self._offline_buffers(offsets)
        requests = ([greedy.Request(b.size, b.first, b.last, off) for b, off in fixed]
                    + [greedy.Request(self.blocks[i].size, self.blocks[i].first, self.blocks[i].last)
                       for i in self.online])
        placed, _ = greedy.plan(requests)
        for k, i in enumerate(self.online):
            offsets[i] = placed[len(fixed) + k]
        return offsets

    def _online_conflict(self, offsets):
        """The first violation by an online block (reserved bytes, region, or bytes of a buffer TFLM sees
        alive at the same time), or None. In-place parts may share bytes with each other, not with these."""
        if not self.online:
            return None
        others = self._offline_buffers(offsets)
        for i in self.online:
            block, off = self.blocks[i], offsets[i]
            error = first_conflict([block], [off], self.reserved, self.region)
            if error is not None:
                return error.replace("block 0", f"block {i}")
            for other, at in others:
                if overlaps_in_time(block, other) and off < at + other.size and at < off + block.size:
                    return f"online block {i} [{off}, {off + block.size}) overlaps a buffer alive at the same time"
            others.append((block, off))
        return None

    def place(self, order, fit):
        """Greedy placement of the unpinned blocks in ``order`` around pins and reserved ranges."""
        n = len(self.blocks)
        offsets = [None] * n
        busy_off, busy_end, busy_first, busy_last = [], [], [], []

        def occupy(off, end, first, last):
            busy_off.append(off)
            busy_end.append(end)
            busy_first.append(first)
            busy_last.append(last)

        for start, end in self.reserved:
            occupy(start, end, -(1 << 60), 1 << 60)
        for i, b in enumerate(self.blocks):
            if b.pin is not None:
                offsets[i] = b.pin
                occupy(b.pin, b.pin + b.size, b.first, b.last)
        for i in order:
            b = self.blocks[i]
            if busy_off:
                boff = np.fromiter(busy_off, np.int64, len(busy_off))
                bfirst = np.fromiter(busy_first, np.int64, len(busy_off))
                blast = np.fromiter(busy_last, np.int64, len(busy_off))
                active = np.nonzero((bfirst <= b.last) & (blast >= b.first))[0]
                active = active[np.argsort(boff[active], kind="stable")]
            else:
                active = ()
            cursor, chosen, chosen_gap = 0, None, None
            for k in active:
                gap = busy_off[k] - cursor
                if gap >= b.size:
                    if fit == "first":
                        chosen = cursor
                        break
                    if chosen_gap is None or gap < chosen_gap:
                        chosen, chosen_gap = cursor, gap
                cursor = max(cursor, busy_end[k])
            if chosen is None:
                chosen = cursor
            offsets[i] = chosen
            occupy(chosen, chosen + b.size, b.first, b.last)
        return offsets

    def try_order(self, order, fit, strategy):
        return self.consider(self.place(order, fit), strategy, list(order), fit)

    def try_two_sided(self):
        """Bottom/top 2-colouring when at most two blocks are ever live at once (chains)."""
        blocks = self.blocks
        if not blocks or any(b.online for b in blocks):
            return
        order = sorted(range(len(blocks)), key=lambda i: (blocks[i].first, blocks[i].last))
        colour = {}
        for n, i in enumerate(order):
            taken = {colour[j] for j in order[:n] if overlaps_in_time(blocks[i], blocks[j])}
            if len(taken) >= 2:
                return
            colour[i] = 0 if 0 not in taken else 1
        window = peak_live(blocks)[0]
        bases = {0, self.reserved_end}
        for flip in (0, 1):
            for i, b in enumerate(blocks):
                if b.pin is not None:
                    local = 0 if colour[i] ^ flip == 0 else window - b.size
                    bases.add(b.pin - local)
        for flip in (0, 1):
            for base in sorted(bases):
                if base < 0:
                    continue
                offsets = [
                    base + (0 if colour[i] ^ flip == 0 else window - b.size) for i, b in enumerate(blocks)
                ]
                self.consider(offsets, "two-sided")

    def local(self, effort, rng):
        order, fit = self.best_order, self.best_fit
        if order is None:  # the two-sided candidate won but missed the bound: start from by-size
            order, fit = _orders(self.blocks, [i for i, b in enumerate(self.blocks) if b.pin is None])[0][1], "best"
        current = self.try_order(order, fit, f"local/{fit}") or (1 << 62, 1 << 62)
        for _ in range(effort):
            if self.done:
                return
            candidate = list(order)
            a, b = sorted(rng.sample(range(len(candidate)), 2))
            candidate.insert(a, candidate.pop(b))
            key = self.try_order(candidate, fit, f"local/{fit}")
            if key is not None and key <= current:
                order, current = candidate, key
