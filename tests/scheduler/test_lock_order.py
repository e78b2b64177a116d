"""Writers lock a request before its reservation. A cancel holds its request and then ends
the reservation; a cycle step that took the reservation first and then recorded an event on
the request (a foreign-key share lock on it) deadlocked with it on PostgreSQL (the API
benchmark met it as a 503)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

import solver
from scheduler import apply as apply_phase
from scheduler.clock import to_epoch
from scheduler.db import session_scope
from scheduler.tables import RequestRow
from tests.api.helpers import make_pool, make_tenant, ok, submit


def test_scheduling_a_reclaim_waits_for_a_cancel_instead_of_deadlocking(op, engine, clock, cycle):
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite serialises writers with one database lock")
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=0, limit=8)
    make_tenant(op, "blue", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8)["id"]
    cycle()
    assert ok(op.get(f"/v1/requests/{rid}", headers=acme))["state"] == "active"
    now = clock.now()
    reclaim = solver.Preemption(rid, to_epoch(now + timedelta(hours=1)), "blue")
    errors: list[BaseException] = []

    def schedule() -> None:
        try:
            with session_scope(engine) as s:
                apply_phase._schedule_reclaims(s, {rid: reclaim}, now)
        except BaseException as exc:
            errors.append(exc)

    with engine.connect() as conn, conn.begin():
        # What a cancel does: its request first ...
        conn.execute(text("SELECT id FROM request WHERE id = :id FOR UPDATE"), {"id": rid})
        worker = threading.Thread(target=schedule)
        worker.start()
        time.sleep(0.5)  # the cycle step is now waiting for a lock
        # ... then its reservation, which the cycle step must not be holding.
        conn.execute(text("SET LOCAL lock_timeout = '3s'"))
        updated = conn.execute(
            text("UPDATE reservation SET updated_at = updated_at WHERE request_id = :id"),
            {"id": rid},
        ).rowcount
        assert updated == 1
    worker.join(10)
    assert not worker.is_alive() and errors == []
    with session_scope(engine, write=False) as s:
        row = s.get(RequestRow, rid)
        assert row is not None and row.state == "active"
