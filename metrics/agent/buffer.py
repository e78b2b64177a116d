"""A bounded FIFO of samples waiting for the server, shared by the sampling and pushing threads.

Nothing is lost while there is room; when it is full the oldest samples make way for new
ones and are counted as dropped (the server can live with a gap in old data better than the
node can live with unbounded memory). Samples being pushed are taken out; if the push fails
they go back to the front, in order, and only the overflow is dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SampleBuffer(Generic[T]):
    """Thread-safe bounded FIFO with drop accounting."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self.dropped_full = 0
        self.dropped_rejected = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def pending(self) -> int:
        """Samples not yet accepted by the server: buffered plus being pushed."""
        with self._lock:
            return len(self._items) + self._in_flight

    def extend(self, items: Iterable[T]) -> int:
        """Append ``items``; returns how many old samples were dropped to make room."""
        with self._lock:
            dropped = 0
            for item in items:
                if len(self._items) >= self.capacity:
                    self._items.popleft()
                    dropped += 1
                self._items.append(item)
            self.dropped_full += dropped
            return dropped

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` of the oldest samples (a batch to push)."""
        with self._lock:
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            self._in_flight += len(batch)
            return batch

    def acknowledge(self, batch: list[T]) -> None:
        """The server accepted ``batch``."""
        with self._lock:
            self._in_flight -= len(batch)

    def reject(self, batch: list[T]) -> None:
        """The server refused ``batch`` for good (it is invalid): count it as dropped."""
        with self._lock:
            self._in_flight -= len(batch)
            self.dropped_rejected += len(batch)

    def put_back(self, batch: list[T]) -> int:
        """A push of ``batch`` failed: return it to the front. Returns how many were dropped.

        New samples may have arrived meanwhile; if both do not fit, the oldest go.
        """
        with self._lock:
            self._in_flight -= len(batch)
            room = max(0, self.capacity - len(self._items))
            keep = batch[max(0, len(batch) - room) :]
            dropped = len(batch) - len(keep)
            self._items.extendleft(reversed(keep))
            self.dropped_full += dropped
            return dropped
