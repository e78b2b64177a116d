"""Step-function usage profiles over time, used by the greedy planner and the validator."""

from __future__ import annotations

import bisect


class Profile:
    """GPUs in use over time as a sorted list of breakpoints; intervals are half-open."""

    __slots__ = ("_deltas", "_times")

    def __init__(self) -> None:
        self._times: list[int] = []
        self._deltas: list[int] = []

    def add(self, start: int, end: int, amount: int) -> None:
        """Use ``amount`` GPUs over ``[start, end)``."""
        if end <= start or amount == 0:
            return
        self._bump(start, amount)
        self._bump(end, -amount)

    def _bump(self, t: int, delta: int) -> None:
        i = bisect.bisect_left(self._times, t)
        if i < len(self._times) and self._times[i] == t:
            self._deltas[i] += delta
        else:
            self._times.insert(i, t)
            self._deltas.insert(i, delta)

    def peak(self, start: int, end: int) -> int:
        """Most GPUs in use at any moment of ``[start, end)``."""
        times, deltas, n = self._times, self._deltas, len(self._times)
        level = 0
        i = 0
        while i < n and times[i] <= start:
            level += deltas[i]
            i += 1
        peak = level
        while i < n and times[i] < end:
            level += deltas[i]
            peak = max(peak, level)
            i += 1
        return peak

    def breakpoints_after(self, t: int) -> list[int]:
        """Times after ``t`` at which usage changes (candidate start times)."""
        i = bisect.bisect_right(self._times, t)
        return self._times[i:]
