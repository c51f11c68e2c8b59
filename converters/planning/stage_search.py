"""Offsets of a bundle's stage buffers, searched stage by stage over what the models then need.

A bundle's stage buffers stay at one offset for the whole inference, and each model plans its
tensors around the buffers alive while it runs. When stage k's models run only while buffers
k - 1 and k hold data (patches grouped by stage, ``converters.planning.bundle``), the shared bytes
of the models that last see stage k alive depend on the offsets of those two buffers alone. So a
dynamic program over the stages finds a layout that keeps the largest of those needs low: the state
is the offset of the last stage placed, its value the largest need so far (min-max), and each
stage tries a few offsets that matter to that need:

* its floor (``converters.planning.stage_floors``: above the AllocateTensors temporaries);
* just above its writers' own plans (they then have the memory below in one piece);
* just above and just below the buffer before it (together they leave one gap, not two);
* with its end at a ceiling: the lower bound plus a little slack, or the need reached so far
  (the memory below stays in one piece for the models that run between them).

``cost`` plans the models themselves (at a low effort: the search ranks layouts, the bundle
then plans the best ones in full). The ``KEPT`` best states of each stage go on.
"""
from converters.planning.lifetimes import align_up
from tinyvision.errors import TinyVisionError

KEPT = 12  # states (offsets of the last stage placed) carried from one stage to the next, least need first
CEILING_SLACK = (0.0, 0.03, 0.06, 0.1)  # stages may end at the lower bound plus these fractions


def search_stage_offsets(spans, floors, above, bound, cost, results=3):
    """The ``results`` stage offset vectors of least estimated shared bytes, best first.

    spans: the stage buffers' bytes (aligned); floors: the lowest offset each may take; above: per
        stage, the bytes its writers' own plans take (an offset that leaves them in one piece);
    bound: a lower bound of the shared region (aligned: the ceilings are fractions above it);
    cost(k, offsets): shared bytes the models whose last stage alive is k need with the first k + 1
        stages at ``offsets`` (a tuple); raise TinyVisionError where they do not fit.
    Stages k and k + 1 never overlap; no other pair is alive at the same time.
    """
    ceilings = sorted({_aligned_above(bound, slack) for slack in CEILING_SLACK})
    states = {(): 0}
    for k in range(len(spans)):
        grown = {}
        for path, need in sorted(states.items(), key=lambda s: (s[1], s[0]))[:KEPT]:
            for at in _tried_offsets(k, path[-1] if path else None, need, spans, floors, above, ceilings):
                try:
                    reached = max(need, cost(k, path + (at,)))
                except TinyVisionError:
                    continue
                if at not in grown or reached < grown[at][1]:
                    grown[at] = (path + (at,), reached)
        states = dict(grown.values())
    return [path for path, _ in sorted(states.items(), key=lambda s: (s[1], s[0]))[:results]]


def _tried_offsets(k, before, need, spans, floors, above, ceilings):
    """Offsets stage k tries after stage k - 1 at ``before`` (None for stage 0), the need so far ``need``."""
    span = spans[k]
    tried = {floors[k], above[k]} | {top - span for top in ceilings + [_aligned_above(need, 0)]}
    if before is not None:
        tried |= {before + spans[k - 1], before - span}
    return sorted(at for at in tried
                  if at >= floors[k] and (before is None or at + span <= before or before + spans[k - 1] <= at))


def _aligned_above(nbytes, slack):
    return align_up(int(nbytes * (1 + slack)))
