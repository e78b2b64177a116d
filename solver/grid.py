"""The planning time grid: fine near ``now``, coarse far out.

Reservations start on grid boundaries. A reservation holds every slot its interval touches,
so bookkeeping on slots is conservative (never over-books) while the reported ``end`` is exact
(``start + duration``). Near ``now`` slots are ``resolution_s`` wide, so starts that matter most
are precise; days ahead an hour is precise enough and keeps the search small. The grid runs
past the horizon by the longest duration so that work starting late in the horizon is still
accounted for, and so that unplaced requests can be given an earliest start beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solver.model import Problem

IntArray = npt.NDArray[np.int64]

# (until this many seconds after now, use slots this many seconds wide); widths are rounded up
# to a multiple of the problem's resolution so every boundary lies on the resolution grid.
EXPLAIN_REACH_S = 7 * 24 * 3600

STEPS: tuple[tuple[int, int], ...] = (
    (3600, 0),  # 0 means: the problem's resolution
    (6 * 3600, 300),
    (24 * 3600, 900),
    (10**12, 3600),
)


@dataclass(frozen=True, slots=True)
class TimeGrid:
    """Slot boundaries ``bounds`` (epoch seconds, ``bounds[0] == now``); slot ``i`` is
    ``[bounds[i], bounds[i + 1])``. Starts are allowed at boundaries ``< horizon_end``."""

    now: int
    resolution_s: int
    horizon_end: int
    bounds: IntArray
    n_starts: int  # boundaries usable as a start inside the horizon

    @property
    def n_slots(self) -> int:
        return len(self.bounds) - 1

    @property
    def end(self) -> int:
        return int(self.bounds[-1])

    def slot_span(self, start: int, end: int) -> tuple[int, int]:
        """Slots ``[a, b)`` touched by the interval ``[start, end)``, clamped to the grid."""
        start = max(start, self.now)
        end = min(end, self.end)
        if end <= start:
            return 0, 0
        a = int(np.searchsorted(self.bounds, start, side="right")) - 1
        b = int(np.searchsorted(self.bounds, end, side="left"))
        return a, b

    def first_start_at_or_after(self, t: int) -> int:
        """Index of the first boundary ``>= t`` (may be ``n_starts`` or beyond)."""
        return int(np.searchsorted(self.bounds, t, side="left"))

    def units(self, t: int) -> int:
        """Time ``t`` after ``now`` in whole resolution units (rounded up)."""
        return -((self.now - t) // self.resolution_s)


def build_grid(problem: Problem, extra_s: int | None = None) -> TimeGrid:
    """The grid for ``problem``: reaches the horizon plus the longest request (or ``extra_s``)."""
    res = problem.resolution_s
    now = problem.now
    horizon_end = now + problem.horizon_s
    longest = max((r.duration_s for r in problem.requests), default=0)
    run_end = max((r.end for r in problem.running), default=now)
    tail = longest if extra_s is None else extra_s
    # Reach past the last running reservation too (capped at a week), so that an
    # earliest start behind it can still be found for an explanation.
    last = max(horizon_end, min(run_end, horizon_end + EXPLAIN_REACH_S)) + max(tail, res)
    bounds: list[int] = [now]
    t = now
    for until, width in STEPS:
        step = res if width == 0 else max(res, -(-width // res) * res)
        limit = now + until
        while t < last and t < limit:
            # Boundaries sit on multiples of the step since the epoch, not of now: the next
            # cycle then finds the previous plan's starts on its own grid, so ETAs can stay put.
            t = (t // step + 1) * step
            bounds.append(t)
        if t >= last:
            break
    arr: IntArray = np.asarray(bounds, dtype=np.int64)
    n_starts = int(np.searchsorted(arr, horizon_end, side="left"))
    return TimeGrid(now, res, horizon_end, arr, n_starts)
