"""Time as an injectable dependency, so tests and the simulator run on simulated time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time, truncated to whole milliseconds."""

    def now(self) -> datetime:
        t = datetime.now(UTC)
        return t.replace(microsecond=t.microsecond // 1000 * 1000)


class ManualClock:
    """A clock that moves only when told to (tests, the simulator)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("a ManualClock does not go back")
            self._now = when.astimezone(UTC)


def to_epoch(t: datetime) -> int:
    """Whole seconds since the epoch (the solver's time unit), rounding down."""
    return int(t.timestamp() // 1)


def to_epoch_ceil(t: datetime) -> int:
    """Whole seconds since the epoch, rounding up: a plan made at ``t`` starts nothing
    before ``t`` (a reservation ended at 12:00:00.4 frees its GPUs for 12:00:01, not 12:00:00)."""
    whole = int(t.timestamp() // 1)
    return whole if whole == t.timestamp() else whole + 1


def from_epoch(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC)
