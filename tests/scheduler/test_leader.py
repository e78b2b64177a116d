"""A follower's replan request never waits for the leader: the leader's apply holds the lease
row locked (PostgreSQL) for as long as it writes a plan, and an API request that asked for a
cycle must not wait that long."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from api.process import wait_for
from scheduler.db import make_engine, session_scope
from scheduler.leader import LEASE_NAME, REPLAN_SIGNAL_INTERVAL_S, LeaderLease
from scheduler.tables import LeaderLeaseRow


def requested_at(engine):
    with session_scope(engine, write=False) as s:
        row = s.get(LeaderLeaseRow, LEASE_NAME)
        return row.replan_requested_at if row else None


@pytest.mark.postgres
def test_replan_request_returns_while_the_leader_holds_the_lease_row(pg_url):

    engine = make_engine(pg_url)
    leader = LeaderLease(engine, "leader")
    follower = LeaderLease(engine, "follower")
    try:
        assert leader.acquire_or_renew()
        with session_scope(engine) as apply_txn:  # the leader's apply, fenced
            assert leader.fence(apply_txn)
            caller = threading.Thread(target=follower.request_replan)
            caller.start()
            caller.join(timeout=10)
            assert not caller.is_alive(), "request_replan waited for the leader's transaction"
            assert requested_at(engine) is None  # the write itself waits for the lock
        wait_for(lambda: requested_at(engine) is not None, timeout=10)
    finally:
        engine.dispose()


def test_replan_requests_are_coalesced(db_url):

    engine = make_engine(db_url)
    follower = LeaderLease(engine, "follower")
    try:
        writes = []
        real = follower._write_replan_request

        def counting() -> None:
            writes.append(1)
            real()

        follower._write_replan_request = counting  # type: ignore[method-assign]
        for _ in range(200):
            follower.request_replan()
        wait_for(lambda: requested_at(engine) is not None, timeout=10)
        # A second write, if any, comes one interval after the first: let it land in this
        # test (the next test's database, emptied, must not get a lease row from it).
        time.sleep(3 * REPLAN_SIGNAL_INTERVAL_S)
        with session_scope(engine, write=False) as s:
            assert s.execute(select(LeaderLeaseRow.name)).scalars().all() == [LEASE_NAME]
        # 200 requests within a moment: the first write, then at most one for the rest.
        assert 1 <= len(writes) <= 2
    finally:
        engine.dispose()


def test_replicas_starting_together_create_one_lease_row(db_url):
    """The second replica's insert meets the first one's uncommitted row: it waits, then
    does nothing, and takes no lease the first one holds."""
    engine = make_engine(db_url)
    first, second = LeaderLease(engine, "first"), LeaderLease(engine, "second")
    outcome: list[bool] = []
    try:
        with session_scope(engine) as s:
            first._ensure_row(s)
            s.flush()
            late = threading.Thread(target=lambda: outcome.append(second.acquire_or_renew()))
            late.start()
            late.join(timeout=0.3)
            assert late.is_alive()  # waiting for the first transaction to end
        late.join(timeout=10)
        assert outcome == [True]  # the row it found was free
        assert not first.acquire_or_renew()
        with session_scope(engine, write=False) as s:
            rows = s.execute(select(LeaderLeaseRow)).scalars().all()
        assert [(r.name, r.holder) for r in rows] == [(LEASE_NAME, "second")]
    finally:
        engine.dispose()
