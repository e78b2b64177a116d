"""Queue positions counted against one read of the queue (services/queue_order.py) give the
same figures as the count in the database (explain.queue_position), ties included; when only
the polled request changed since the read, or it is newer than the read, still the same; a
class is read only when polled often, and the read is kept for ``max_age_s``; on both
databases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from scheduler.services.explain import queue_position
from scheduler.services.queue_order import READ_AFTER, QueueOrder, QueueOrders
from scheduler.tables import GpuClassRow, RequestRow, TenantRow

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TENANTS = ("acme", "zeta", "umbra")
CLASSES = ("H100", "A100")


def _minutes(n: int) -> datetime:
    return NOW + timedelta(minutes=n)


def _row(rng: random.Random, i: int) -> dict[str, object]:
    state = rng.choice(["pending", "planned", "planned", "active", "cancelled"])
    # Few distinct values, so that ties on start, priority and age are common.
    start = NOW + timedelta(minutes=rng.randrange(4)) if state == "planned" else None
    if state == "pending" and rng.random() < 0.2:
        start = NOW + timedelta(minutes=rng.randrange(4))  # a pending row that keeps a start
    return {
        "tenant": rng.choice(TENANTS),
        "name": f"r{i}",
        "gpu_class": rng.choice(CLASSES),
        "gpus": 1,
        "gpus_per_node": 1,
        "duration_s": 3600,
        "priority": rng.randrange(3),
        "preemptible": True,
        "requeue_on_preemption": True,
        "state": state,
        "planned_start": start,
        "reason_code": "x",
        "reason_message": "x",
        "submitted_at": NOW - timedelta(seconds=rng.randrange(5)),
        "updated_at": NOW,
        "version": 1,
    }


def _queue(engine, seed: int, n: int = 90) -> None:
    rng = random.Random(seed)
    with Session(engine) as s:
        for name in CLASSES:
            s.add(GpuClassRow(name=name, created_at=NOW))
        for name in TENANTS:
            s.add(TenantRow(name=name, created_at=NOW, updated_at=NOW))
        s.commit()
        s.execute(insert(RequestRow), [_row(rng, i) for i in range(n)])
        s.commit()


def _all(s: Session) -> list[RequestRow]:
    return list(s.exec(select(RequestRow).order_by(col(RequestRow.id))))


def test_positions_from_one_read_equal_the_count_in_the_database(engine):
    _queue(engine, seed=1)
    with Session(engine) as s:
        orders = {c: QueueOrder.read(s, c) for c in CLASSES}
        rows = _all(s)
        waiting = [r for r in rows if r.state in ("pending", "planned")]
        assert len(waiting) > 40
        for r in rows:
            assert orders[r.gpu_class].position(r) == queue_position(s, r), r
        # the figures are not all trivial: several places, several tenants per class
        places = {orders[r.gpu_class].position(r).gpu_class for r in waiting}
        assert len(places) > 15


def test_a_request_that_changed_since_the_read_is_placed_as_it_stands(engine):
    _queue(engine, seed=2)
    rng = random.Random(7)
    with Session(engine) as s:
        orders = {c: QueueOrder.read(s, c) for c in CLASSES}
        rows = _all(s)
        changes = 0
        for r in rng.sample(rows, 40):
            # Only this request changes (not committed): planned or moved, re-queued, or
            # its priority changed, or it stops waiting.
            new = rng.choice(
                [
                    {"state": "planned", "planned_start": _minutes(rng.randrange(5))},
                    {"state": "pending", "planned_start": None},
                    {"priority": rng.randrange(3)},
                    {"state": "cancelled"},
                ]
            )
            s.execute(update(RequestRow).where(col(RequestRow.id) == r.id).values(**new))
            fresh = s.get(RequestRow, r.id, populate_existing=True)
            assert fresh is not None
            assert orders[fresh.gpu_class].position(fresh) == queue_position(s, fresh), new
            changes += 1
            s.rollback()
        assert changes == 40
        # A request newer than the read: placed among the ones read, and counted as waiting.
        for i, state in enumerate(("pending", "planned")):
            values = _row(random.Random(i), 1000 + i) | {
                "state": state,
                "gpu_class": "H100",
                "planned_start": NOW + timedelta(minutes=2) if state == "planned" else None,
            }
            new_id = s.execute(insert(RequestRow).returning(col(RequestRow.id)), values).scalar()
            fresh = s.get(RequestRow, new_id)
            assert fresh is not None
            got = orders["H100"].position(fresh)
            assert got == queue_position(s, fresh)
            assert got is not None and got.waiting_in_class == len(orders["H100"].entries) + 1
            s.rollback()


def test_a_class_polled_often_is_read_once_per_max_age(engine):
    _queue(engine, seed=3)
    now = [0.0]
    orders = QueueOrders(2.0, clock=lambda: now[0])
    with Session(engine) as s:
        last = max(
            (r for r in _all(s) if r.state == "pending" and r.planned_start is None),
            key=lambda r: (-r.priority, r.submitted_at, r.id or 0),
        )
        exact = queue_position(s, last)
        # Polls further apart than max_age are counted in the database, every one.
        for _ in range(2 * READ_AFTER):
            now[0] += 2.0
            assert orders.position(s, last) == exact
        assert (orders.reads, orders.counts) == (0, 2 * READ_AFTER)
        # READ_AFTER polls within max_age of each other: the last one reads the queue.
        now[0] += 2.0
        for _ in range(READ_AFTER):
            now[0] += 0.1
            assert orders.position(s, last) == exact
        assert (orders.reads, orders.counts) == (1, 3 * READ_AFTER - 1)
        # Another request of the class leaves the queue: the read is kept for 2 s.
        other = next(
            r
            for r in _all(s)
            if r.gpu_class == last.gpu_class and r.state == "planned" and r.id != last.id
        )
        s.execute(
            update(RequestRow).where(col(RequestRow.id) == other.id).values(state="cancelled")
        )
        s.commit()
        now[0] += 1.9
        assert orders.position(s, last) == exact and orders.reads == 1
        # Then it is counted again (and read again after READ_AFTER polls).
        now[0] += 0.1
        after = orders.position(s, last)
        assert after == queue_position(s, last) and orders.reads == 1
        assert after is not None and exact is not None
        assert (after.gpu_class, after.waiting_in_class) == (
            exact.gpu_class - 1,
            exact.waiting_in_class - 1,
        )
        for _ in range(READ_AFTER - 1):
            assert orders.position(s, last) == after
        assert orders.reads == 2
        # A request that does not wait needs neither.
        active = next(r for r in _all(s) if r.state == "active")
        counts = orders.counts
        assert orders.position(s, active) is None
        assert (orders.reads, orders.counts) == (2, counts)
        # max_age 0: always counted.
        never = QueueOrders(0.0)
        for _ in range(2 * READ_AFTER):
            assert never.position(s, last) == after
        assert (never.reads, never.counts) == (0, 2 * READ_AFTER)
