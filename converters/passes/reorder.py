"""Reorder operators to minimize the peak of live activation memory.

The TFLite converter schedules parallel branches breadth-first: a block whose
expansion is split into groups runs every group's expansion before any group's
depthwise, so all expanded tensors are live at once. TFLM plans the arena from
the operator order in the flatbuffer, so running each group to completion
lowers the arena's head without touching any kernel.

Memory model (``live_bytes_per_op``): the lifetimes TFLM's planner uses
(``converters.planning.lifetimes.tensor_lifetimes`` of the graph with its ops in
the order under evaluation), where op i runs in allocation scope i + 1 and
scope 0 (the start: graph inputs nobody reads) counts as part of op 0. An op's
live bytes are the sum of the planned tensors alive then, each rounded up to 16 bytes. The
peak is a lower bound of TFLM's arena head (kernel scratch buffers come on
top); TFLM's own greedy planner (largest buffer first, first fit) can fragment
above it where branches interleave, an offline plan (``converters.planning``)
of the same order reaches it. The search evaluates partial orders with an
incremental form of the same model (``_Problem`` / ``_Segment``).

Search (``reorder_graph``):

1. Cut the order at *cut points*: positions k where every op after k depends
   (transitively) on every op before k. Every topological order runs the prefix
   first, so the segments are independent subproblems and a MobileNet-like
   chain of blocks falls apart into one small segment per block.
2. Per segment: a greedy order (smallest live bytes next) and the original
   order give an incumbent; if it already meets a lower bound it is optimal.
   Otherwise an exact best-first search over sets of executed ops (memoized on
   the set, bottleneck Dijkstra: a state's cost is the peak so far) looks for a
   strictly better order, within ``state_budget`` expanded states; past the
   budget the deepest state reached is completed greedily, and the better of
   that and the incumbent stays.
3. A segment keeps its original order unless the new one has a strictly lower
   peak, and the graph keeps its original order unless its peak drops.

Ops with side effects (resource variables, variable tensors, control flow,
custom ops) keep their relative order, so only data-flow freedom is used.
"""
import dataclasses
import heapq

from converters.planning.lifetimes import align_up, live_bytes, needs_allocating, tensor_lifetimes
from tinyvision.errors import TinyVisionError

DEFAULT_STATE_BUDGET = 20_000  # about a second of search per segment

# Ops whose effects are not visible as tensor edges: they keep their relative order.
_ORDERED_OPCODES = frozenset(
    {"ASSIGN_VARIABLE", "READ_VARIABLE", "VAR_HANDLE", "CALL_ONCE", "CALL", "WHILE", "IF"}
)


@dataclasses.dataclass(frozen=True)
class ReorderResult:
    """Outcome of ``reorder_graph`` for one graph (bytes as in ``live_bytes_per_op``).

    exact: every segment was solved optimally (the peak after is the minimum over all
    topological orders); False when a segment exceeded the state budget and kept its
    greedy or original order.
    segments: independent pieces the order was cut into; states: search states expanded.
    """

    peak_before: int
    peak_after: int
    changed: bool
    exact: bool
    segments: int
    states: int

    @property
    def saved_bytes(self):
        return self.peak_before - self.peak_after


def _planned(tensor):
    """Whether TFLM plans ``tensor`` into the arena's head."""
    return tensor is not None and needs_allocating(tensor)


def _arena_bytes(tensors):
    return sum(align_up(t.nbytes) for t in tensors)


def live_bytes_per_op(graph, order=None):
    """Live activation bytes while each op runs: a list with one int per op of ``order``.

    order: the ops of ``graph`` in some execution order (default ``graph.ops``).
    Raises TinyVisionError if ``order`` is not a permutation of the graph's ops or
    an op reads a tensor that a later op produces.
    """
    ops = list(graph.ops if order is None else order)
    if order is not None and (len(ops) != len(graph.ops) or set(ops) != set(graph.ops)):
        raise TinyVisionError("the order is not a permutation of the graph's operators")
    position = {t: i for i, op in enumerate(ops) for t in op.outputs if _planned(t)}
    inputs = set(graph.inputs)
    for i, op in enumerate(ops):
        for t in op.inputs:
            if position.get(t, -1) >= i and t not in inputs:
                raise TinyVisionError(f"operator {i} ({op.opcode}) reads {t.name!r} before it is produced")
    # Scope 0 (the start) counts as part of op 0's scope 1.
    lifetimes = [dataclasses.replace(lt, first=max(lt.first, 1), last=max(lt.last, 1))
                 for lt in tensor_lifetimes(dataclasses.replace(graph, ops=ops))]
    return live_bytes(lifetimes, [(i + 1, i + 1) for i in range(len(ops))])


def peak_live_bytes(graph, order=None):
    """The largest ``live_bytes_per_op`` value (0 for a graph without ops)."""
    return max(live_bytes_per_op(graph, order), default=0)


def reorder_graph(graph, state_budget=DEFAULT_STATE_BUDGET):
    """Rewrite ``graph.ops`` in place into a topological order of minimal peak live memory.

    state_budget: search states each segment may expand before it settles for a heuristic order.
    Returns a ``ReorderResult``; the graph's order only changes when its peak drops.
    """
    problem = _Problem(graph)
    before = live_bytes_per_op(graph)
    peak_before = max(before, default=0)
    segments = problem.segments()
    new_order, exact, states = [], True, 0
    for a, b in segments:
        segment = _Segment(problem, a, b)
        order, seg_exact, seg_states = segment.solve(max(before[a:b]), state_budget)
        new_order.extend(a + j for j in order)
        exact &= seg_exact
        states += seg_states
    candidate = [problem.ops[i] for i in new_order]
    peak_after = peak_live_bytes(graph, candidate)
    changed = peak_after < peak_before
    if changed:
        graph.ops = candidate
    else:
        peak_after = peak_before
    return ReorderResult(peak_before, peak_after, changed, exact, len(segments), states)


def reorder_model(model, state_budget=DEFAULT_STATE_BUDGET):
    """``reorder_graph`` on every subgraph of ``model`` (in place); one ``ReorderResult`` per subgraph."""
    return [reorder_graph(g, state_budget) for g in model.subgraphs]


def reorder_tflite(model_bytes, state_budget=DEFAULT_STATE_BUDGET, name="model"):
    """Reorder a .tflite flatbuffer: returns (bytes, [ReorderResult per subgraph]).

    The input bytes come back unchanged when no subgraph's peak drops.
    """
    from converters.ir import Model

    model = Model.from_bytes(model_bytes, name=name)
    results = reorder_model(model, state_budget)
    if not any(r.changed for r in results):
        return model_bytes, results
    return model.to_bytes(), results


class _Problem:
    """The graph as bitmasks over original op positions: dependencies, tensors, cut points.

    ``reads``/``writes`` (per op) hold only tensors whose lifetime depends on the order;
    ``always_bytes`` is what is live throughout (graph inputs that are also outputs),
    ``last_bytes`` what is live at the last op only (outputs that are neither fed nor produced).
    """

    def __init__(self, graph):
        self.graph = graph
        self.ops = list(graph.ops)
        n = len(self.ops)
        producer = {}
        for i, op in enumerate(self.ops):
            for t in op.outputs:
                if t is not None and not t.is_constant:
                    if t in producer:
                        raise TinyVisionError(f"tensor {t.name!r} is produced by two operators")
                    producer[t] = i
        self.producer = producer
        self.inputs = {t for t in graph.inputs if _planned(t)}
        outputs = {t for t in graph.outputs if _planned(t)}
        self.outputs = {t for t in outputs if t in producer}  # live from their producer to the end
        # Outputs nobody produces: graph inputs live throughout; the others TFLM creates at the
        # end, so they are live at the last op only. Both are constant offsets of any order.
        fixed = outputs - self.outputs
        self.always_bytes = _arena_bytes(fixed & self.inputs)
        self.last_bytes = _arena_bytes(fixed - self.inputs)
        self.reads, self.writes = [], []
        self.consumers = {}  # tensor -> bitmask of reading ops
        preds = [0] * n
        last_ordered = None
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                if t is not None and t in producer:
                    if producer[t] >= i:
                        raise TinyVisionError(f"operator {i} ({op.opcode}) reads {t.name!r} before it is produced")
                    preds[i] |= 1 << producer[t]
            reads = list(dict.fromkeys(t for t in op.inputs if _planned(t) and t not in fixed))
            self.reads.append(reads)
            self.writes.append([t for t in op.outputs if _planned(t)])
            for t in reads:
                self.consumers[t] = self.consumers.get(t, 0) | (1 << i)
            if self._has_side_effects(op):
                if last_ordered is not None:
                    preds[i] |= 1 << last_ordered
                last_ordered = i
        self.preds = preds
        # Graph inputs nobody reads are live at the first op only.
        self.unread_input_bytes = _arena_bytes(t for t in self.inputs - fixed if t not in self.consumers)
        self.needed_late = set(self.consumers) | self.outputs
        self.cuts = self._cut_points()

    @staticmethod
    def _has_side_effects(op):
        return (
            op.opcode in _ORDERED_OPCODES
            or op.custom_code is not None
            or any(t is not None and t.is_variable for t in op.inputs + op.outputs)
        )

    def _cut_points(self):
        """Positions k (0 < k < n) such that every op at or after k depends on every op before k."""
        n = len(self.ops)
        ancestors = [0] * n
        for i in range(n):
            mask, preds = 0, self.preds[i]
            while preds:
                low = preds & -preds
                p = low.bit_length() - 1
                mask |= ancestors[p] | low
                preds ^= low
            ancestors[i] = mask
        cuts, reach = [], n
        # reach = min over ops at or after k of the length of the all-ancestor prefix
        for k in range(n - 1, 0, -1):
            anc = ancestors[k]
            prefix = (~anc & (anc + 1)).bit_length() - 1  # trailing ones of anc
            reach = min(reach, prefix)
            if reach >= k:
                cuts.append(k)
        return sorted(cuts)

    def segments(self):
        bounds = [0] + self.cuts + [len(self.ops)]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class _Segment:
    """Ops a..b-1 as a standalone problem; states are bitmasks over local positions 0..m-1.

    ``resident`` bytes of a state = tensors available and still needed after the executed set;
    running op v next costs base + resident + bytes of v's outputs.
    """

    def __init__(self, problem, a, b):
        self.m = m = b - a
        self.full = (1 << m) - 1
        self.preds = [(problem.preds[a + j] >> a) & self.full for j in range(m)]
        succs = [0] * m
        for j, p in enumerate(self.preds):
            while p:
                low = p & -p
                succs[low.bit_length() - 1] |= 1 << j
                p ^= low
        self.succs = succs
        touching = {}
        for j in range(m):
            for t in problem.reads[a + j] + problem.writes[a + j]:
                touching[t] = None
        self.size = {t: align_up(t.nbytes) for t in touching}
        self.local_consumers = {t: (problem.consumers.get(t, 0) >> a) & self.full for t in touching}
        # Live until the segment's end: read after it or a graph output.
        self.keep = {t for t in touching if problem.consumers.get(t, 0) >> b or t in problem.outputs}
        self.reads = [problem.reads[a + j] for j in range(m)]
        self.writes = [problem.writes[a + j] for j in range(m)]
        available = [t for t in touching if t not in problem.producer or problem.producer[t] < a]
        self.resident0 = sum(self.size[t] for t in available)
        self.through = {t for t in available if t in self.keep}  # live through the whole segment
        self.first_extra = problem.unread_input_bytes if a == 0 else 0
        self.last_extra = problem.last_bytes if b == len(problem.ops) else 0
        # Live across the whole segment without touching it: a constant offset.
        self.base = problem.always_bytes + _arena_bytes(
            t
            for t in problem.needed_late
            if t not in touching
            and problem.producer.get(t, -1) < a
            and (problem.consumers.get(t, 0) >> b or t in problem.outputs)
        )
        self.out_bytes = [sum(self.size[t] for t in w) for w in self.writes]

    def step(self, state, resident, v):
        """Run local op v after ``state``: (live bytes while v runs, new state, new resident bytes)."""
        done = state | (1 << v)
        mem = self.base + resident + self.out_bytes[v]
        mem += (self.first_extra if state == 0 else 0) + (self.last_extra if done == self.full else 0)
        resident += sum(self.size[t] for t in self.writes[v] if self.local_consumers[t] or t in self.keep)
        for t in self.reads[v]:
            if t not in self.keep and not self.local_consumers[t] & ~done:
                resident -= self.size[t]
        return mem, done, resident

    def ready_after(self, ready, done, v):
        ready &= ~(1 << v)
        succs = self.succs[v]
        while succs:
            low = succs & -succs
            w = low.bit_length() - 1
            if self.preds[w] & ~done == 0:
                ready |= low
            succs ^= low
        return ready

    def initial_ready(self):
        return sum(1 << j for j in range(self.m) if self.preds[j] == 0)

    def greedy(self, state=0, resident=None, ready=None):
        """Complete ``state`` greedily: next op = the ready one with the least live bytes, then the
        most memory freed, then the earliest. Returns (ops appended, peak over them)."""
        resident = self.resident0 if resident is None else resident
        ready = self.initial_ready() if ready is None else ready
        order, peak = [], 0
        while ready:
            best = None
            r = ready
            while r:
                low = r & -r
                v = low.bit_length() - 1
                mem, done, res = self.step(state, resident, v)
                key = (mem, res, v)
                if best is None or key < best[0]:
                    best = (key, v, done, res)
                r ^= low
            (mem, _, _), v, state, resident = best
            ready = self.ready_after(ready, state, v)
            order.append(v)
            peak = max(peak, mem)
        return order, peak

    def lower_bound(self):
        """No order beats the costliest op's own inputs and outputs plus what stays live throughout."""
        through = self.base + sum(self.size[t] for t in self.through)
        return max(
            through + sum(self.size[t] for t in dict.fromkeys(self.reads[j] + self.writes[j]) if t not in self.through)
            for j in range(self.m)
        )

    def solve(self, original_peak, budget):
        """(local order, exact, states expanded): the original order unless something strictly better is found.

        original_peak: the segment's peak in its original order.
        """
        original = list(range(self.m))
        if self.m == 1:
            return original, True, 0
        greedy, greedy_peak = self.greedy()
        incumbent, incumbent_peak = (greedy, greedy_peak) if greedy_peak < original_peak else (original, original_peak)
        if incumbent_peak <= self.lower_bound():
            return incumbent, True, 0
        found, exact, states = self._search(incumbent_peak, budget)
        return (found if found is not None else incumbent), exact, states

    def _search(self, bound, budget):
        """Best-first search for an order with peak < bound: (order or None, exact, states expanded).

        Cost of a state = the peak along the best path found to it; states come off the heap by
        (cost, most ops executed first, insertion order), so the first complete state is optimal.
        Past the budget, the deepest state reached is completed greedily (a heuristic answer).
        """
        best = {0: 0}
        parent = {}
        heap = [(0, 0, 0, 0, self.resident0, self.initial_ready())]
        counter, expanded = 1, 0
        deepest = heap[0]
        while heap:
            entry = heapq.heappop(heap)
            cost, depth, _, state, resident, ready = entry
            if cost > best[state]:
                continue
            if state == self.full:
                return _path(parent, state), True, expanded
            if depth < deepest[1]:
                deepest = entry
            expanded += 1
            if expanded > budget:
                cost, _, _, state, resident, ready = deepest
                rest, peak = self.greedy(state, resident, ready)
                return (_path(parent, state) + rest if max(cost, peak) < bound else None), False, expanded
            r = ready
            while r:
                low = r & -r
                v = low.bit_length() - 1
                r ^= low
                mem, done, res = self.step(state, resident, v)
                peak = max(cost, mem)
                if peak >= bound or peak >= best.get(done, bound):
                    continue
                best[done] = peak
                parent[done] = (state, v)
                heapq.heappush(heap, (peak, depth - 1, counter, done, res, self.ready_after(ready, done, v)))
                counter += 1
        return None, True, expanded


def _path(parent, state):
    """The ops that led to ``state`` along the search's parent links, in execution order."""
    order = []
    while state:
        state, v = parent[state]
        order.append(v)
    return order[::-1]
