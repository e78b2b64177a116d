"""Queue positions for polls, counted against one read of the waiting queue.

:func:`scheduler.services.explain.queue_position` counts a request's place in the database,
which reads every waiting request of its GPU class: at 15,000 waiting, 6-9 ms per poll on
SQLite and PostgreSQL alike, the largest part of a poll. :class:`QueueOrder` reads the waiting
queue of a class once, sorted the way that count orders it, and then answers each poll by
bisection. :class:`QueueOrders` keeps one per class for at most ``max_age_s`` seconds where
polls come often enough to pay for the read, so a position may miss what changed in the
queue since (a submit, a cancel, a cycle's plan) for that long; the polled request itself is
always taken as it stands now.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from scheduler.domain import WAITING_VALUES
from scheduler.services.explain import QueuePosition, queue_position
from scheduler.tables import RequestRow

#: A waiting request's place in the order, as ``queue_position`` counts it: planned ones
#: first, by start (then id); the rest by priority (highest first), then age (then id).
Key = tuple[int, Any, Any, int]


def _key(planned_start: datetime | None, priority: int, submitted_at: datetime, id_: int) -> Key:
    if planned_start is not None:
        return (0, planned_start, 0, id_)
    return (1, -priority, submitted_at, id_)


@dataclass
class QueueOrder:
    """The waiting requests of one GPU class, in queue order (overall and per tenant)."""

    #: The keys of all of them, and of each tenant's, sorted.
    everyone: list[Key]
    by_tenant: dict[str, list[Key]]
    #: id -> (tenant, key) of every request read, to leave a polled request's old place out.
    entries: dict[int, tuple[str, Key]]

    @classmethod
    def read(cls, session: Session, gpu_class: str) -> QueueOrder:
        rows = (
            session.connection()
            .execute(
                select(
                    col(RequestRow.id),
                    col(RequestRow.tenant),
                    col(RequestRow.planned_start),
                    col(RequestRow.priority),
                    col(RequestRow.submitted_at),
                ).where(
                    col(RequestRow.gpu_class) == gpu_class,
                    col(RequestRow.state).in_(WAITING_VALUES),
                )
            )
            .all()
        )
        entries = {
            int(id_ or 0): (tenant, _key(start, priority, submitted, int(id_ or 0)))
            for id_, tenant, start, priority, submitted in rows
        }
        by_tenant: dict[str, list[Key]] = {}
        for tenant, key in entries.values():
            by_tenant.setdefault(tenant, []).append(key)
        for keys in by_tenant.values():
            keys.sort()
        return cls(sorted(key for _, key in entries.values()), by_tenant, entries)

    def position(self, req: RequestRow) -> QueuePosition | None:
        """``req``'s place as it stands now among the others as they were read; None unless it
        waits. The same figures as ``explain.queue_position`` when nothing changed since."""
        if req.state not in WAITING_VALUES:
            return None
        rid = int(req.id or 0)
        key = _key(req.planned_start, req.priority, req.submitted_at, rid)
        before = bisect_left(self.everyone, key)
        before_own = bisect_left(self.by_tenant.get(req.tenant, []), key)
        old = self.entries.get(rid)
        if old is not None and old[1] < key:  # its place when read is not one ahead of it
            before -= 1
            if old[0] == req.tenant:
                before_own -= 1
        total = len(self.entries) + (0 if old is not None else 1)
        return QueuePosition(tenant=before_own + 1, gpu_class=before + 1, waiting_in_class=total)


#: Polls of one class counted in the database, each within ``max_age_s`` of the one before,
#: after which its queue is read: a read costs about as much as 10 counts (15,000 waiting:
#: 70-100 ms against 6-9 ms), so a class polled less often than that never pays for one.
READ_AFTER = 10


@dataclass
class _Class:
    order: QueueOrder | None = None
    read_at: float = 0.0
    counted: int = 0
    counted_at: float = float("-inf")
    reading: bool = False


class QueueOrders:
    """Queue positions for the polls of one API process: from a :class:`QueueOrder` per GPU
    class, read again once older than ``max_age_s``, where the class is polled often enough
    to pay for the read (:data:`READ_AFTER`); otherwise counted in the database as
    ``explain.queue_position`` does (always, with ``max_age_s`` 0).

    Shared by the threads of the process: while one of them reads a class's queue, the
    others count in the database instead of waiting for it.
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._classes: dict[str, _Class] = {}
        self._guard = threading.Lock()
        #: Reads of a queue and positions counted in the database so far (tests, metrics).
        self.reads = 0
        self.counts = 0

    def position(self, session: Session, req: RequestRow) -> QueuePosition | None:
        if req.state not in WAITING_VALUES:
            return None
        order = self._order(session, req.gpu_class) if self.max_age_s > 0 else None
        if order is not None:
            return order.position(req)
        with self._guard:
            self.counts += 1
        return queue_position(session, req)

    def _order(self, session: Session, gpu_class: str) -> QueueOrder | None:
        """The class's queue if it was read recently enough, or is read now; None: count."""
        now = self._clock()
        with self._guard:
            c = self._classes.setdefault(gpu_class, _Class())
            if c.order is not None and now - c.read_at < self.max_age_s:
                return c.order
            if now - c.counted_at >= self.max_age_s:
                c.counted = 0
            c.counted += 1
            c.counted_at = now
            if c.counted < READ_AFTER or c.reading:
                return None
            c.reading = True
        try:
            order = QueueOrder.read(session, gpu_class)
        finally:
            with self._guard:
                c.reading = False
        with self._guard:
            c.order, c.read_at, c.counted = order, now, 0
            self.reads += 1
        return order
