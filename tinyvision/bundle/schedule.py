"""When each stage buffer of a bundle holds data, from the order of its patches (docs/bundle-format.md).

Patch ``i`` (its position in ``plan["patches"]``) writes its box of its stage's buffer and reads its
window from its source: the image, or the buffer of an earlier stage. The tail runs after the last patch
(position ``n``, the number of patches) and reads the last stage. The writes of a stage come in *fills*:
the runs of writes with no read of that stage between them. Every fill covers its buffer exactly once,
is complete before it is read and is read at least once; a stage is *live* from the first write of a fill
to the last read of that fill. Two stages live at the same position need memory of their own; a patch
model keeps its tensors out of every stage live where it runs, and in "one_at_a_time" mode creating it
may only write below them.

Patches grouped by stage, each stage reading the one before, give one fill per stage and the classic
picture: only stages ``k - 1`` and ``k`` are live while stage ``k`` runs. Interleaved orders (the
segments of one tunnel after another, each segment its own stage) refill short-lived stages many times
while a long-lived one collects every tunnel's output.
"""
import dataclasses

from tinyvision.errors import TinyVisionError

IMAGE = -1  # a patch source: the image rather than a stage buffer


@dataclasses.dataclass(frozen=True)
class Fill:
    """One fill of ``stage``: the patches (positions) ``writes`` fill its buffer; the last read of what they wrote
    happens at position ``last_read`` (the number of patches: the tail)."""

    stage: int
    writes: tuple
    last_read: int

    @property
    def first(self):
        return self.writes[0]


class Schedule:
    """The fills of every stage of a bundle and where each is live.

    stage_count: the number of stages; patches: ``(stage, source)`` per patch in plan order (source
    ``IMAGE`` or an earlier stage). Raises TinyVisionError for an order no runtime can follow: a stage
    without a patch, a source that is not earlier than its stage, a stage read before a fill, a fill
    never read.
    """

    def __init__(self, stage_count, patches):
        self.stage_count = stage_count
        self.positions = len(patches)  # the tail's position
        fills, current, readers = [], [None] * stage_count, [[] for _ in range(stage_count)]
        for i, (stage, source) in enumerate(list(patches) + ([(None, stage_count - 1)] if stage_count else [])):
            what = "the tail" if stage is None else f"patch {i}"
            if source != IMAGE:
                if not 0 <= source < (stage_count if stage is None else stage):
                    raise TinyVisionError(f"{what} (stage {stage}) reads stage {source}: a patch reads the image or "
                                          "an earlier stage")
                if current[source] is None:
                    raise TinyVisionError(f"{what} reads stage {source} before any patch fills it")
                readers[source].append(i)
            if stage is None:
                continue
            if current[stage] is None or readers[stage]:  # the stage's previous fill (if any) has been read
                if current[stage] is not None:
                    fills.append(Fill(stage, tuple(current[stage]), readers[stage][-1]))
                current[stage], readers[stage] = [], []
            current[stage].append(i)
        for k in range(stage_count):
            if current[k] is None:
                raise TinyVisionError(f"stage {k} has no patch")
            if not readers[k]:
                raise TinyVisionError(f"stage {k}'s last fill (patches {current[k][0]}..{current[k][-1]}) is never read")
            fills.append(Fill(k, tuple(current[k]), readers[k][-1]))
        self.fills = sorted(fills, key=lambda f: (f.first, f.stage))

    def live_at(self, position):
        """The stages holding data at ``position`` (a patch, or the tail at ``positions``)."""
        return frozenset(f.stage for f in self.fills if f.first <= position <= f.last_read)

    def live_during(self, positions):
        """The stages live at any of ``positions``."""
        return frozenset().union(*(self.live_at(i) for i in positions))

    def together(self):
        """The pairs ``(a, b)``, ``a < b``, of stages live at a common position: their buffers must not overlap."""
        pairs = set()
        for i in range(self.positions + 1):
            live = sorted(self.live_at(i))
            pairs.update((a, b) for j, a in enumerate(live) for b in live[j + 1:])
        return pairs

    def interleaved(self):
        """Whether some stage's patches run between another stage's (a stage is filled more than once, or patches
        are not grouped by stage in ascending order)."""
        stages = [f.stage for f in self.fills]
        return len(stages) != self.stage_count or stages != sorted(stages)
