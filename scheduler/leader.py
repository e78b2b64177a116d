"""One replica runs cycles: a lease row with an expiry, renewed by its holder.

Any number of server processes may share one database; the API answers on all of them.
The holder renews the lease every few seconds; when it dies, the lease expires and another
replica takes it (within ``ttl_s`` plus one poll). Every change of holder bumps ``term``, and
the apply phase checks the lease inside its own transaction (``fence``), so a replica that
lost the lease while it was solving cannot write a stale plan.

Lease times use the wall clock of the replicas (keep them NTP-synchronised), never the
injectable clock of the cycle, which may be simulated.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from scheduler.db import insert_for, session_scope
from scheduler.tables import LeaderLeaseRow

LEASE_NAME = "cycle"
#: A follower writes at most one replan request per this many seconds (the leader debounces).
REPLAN_SIGNAL_INTERVAL_S = 0.5

log = logging.getLogger(__name__)


def replica_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str
    term: int
    expires_at: datetime | None
    cycle_running_since: datetime | None = None


class LeaderLease:
    def __init__(self, engine: Engine, identity: str | None = None, *, ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.identity = identity or replica_identity()
        self.ttl = timedelta(seconds=ttl_s)
        self.term: int | None = None
        self._replan_wanted = threading.Event()
        self._signaller: threading.Thread | None = None
        self._signaller_lock = threading.Lock()

    def _ensure_row(self, session: Session) -> None:
        if session.get(LeaderLeaseRow, LEASE_NAME) is None:
            # Replicas starting together race to create it; the loser's insert does nothing
            # (no duplicate-key error in PostgreSQL's log at every start).
            table = LeaderLeaseRow.__table__  # type: ignore[attr-defined]
            insert = insert_for(session)(table).values(name=LEASE_NAME)
            session.execute(insert.on_conflict_do_nothing(index_elements=["name"]))

    def acquire_or_renew(self) -> bool:
        """Take the lease if it is free or expired, renew it if it is ours; True if we hold it."""
        now = _wall()
        with session_scope(self.engine) as session:
            self._ensure_row(session)
            row = session.get(LeaderLeaseRow, LEASE_NAME, populate_existing=True)
            assert row is not None
            mine = row.holder == self.identity
            free = not row.holder or row.expires_at is None or row.expires_at <= now
            if not (mine or free):
                self.term = None
                return False
            new_term = row.term if mine else row.term + 1
            result = session.execute(
                update(LeaderLeaseRow)
                .where(
                    LeaderLeaseRow.name == LEASE_NAME,  # type: ignore[arg-type]
                    LeaderLeaseRow.holder == row.holder,  # type: ignore[arg-type]
                    LeaderLeaseRow.term == row.term,  # type: ignore[arg-type]
                )
                .values(
                    holder=self.identity,
                    term=new_term,
                    acquired_at=row.acquired_at if mine else now,
                    renewed_at=now,
                    expires_at=now + self.ttl,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                self.term = None
                return False
            self.term = new_term
            return True

    def release(self) -> None:
        """Give the lease up at shutdown so another replica takes over at once."""
        if self.term is None:
            return
        with session_scope(self.engine) as session:
            session.execute(
                update(LeaderLeaseRow)
                .where(
                    LeaderLeaseRow.name == LEASE_NAME,  # type: ignore[arg-type]
                    LeaderLeaseRow.holder == self.identity,  # type: ignore[arg-type]
                )
                .values(expires_at=_wall())
            )
        self.term = None

    def fence(self, session: Session) -> bool:
        """Inside a write transaction: do we still hold the lease? Locks the lease row on
        PostgreSQL so that no takeover commits while this transaction writes."""
        stmt = select(LeaderLeaseRow).where(LeaderLeaseRow.name == LEASE_NAME)
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = session.exec(stmt).first()
        return (
            row is not None
            and self.term is not None
            and row.holder == self.identity
            and row.term == self.term
            and row.expires_at is not None
            and row.expires_at > _wall()
        )

    def view(self) -> LeaseView:
        with session_scope(self.engine, write=False) as session:
            row = session.get(LeaderLeaseRow, LEASE_NAME)
            if row is None:
                return LeaseView("", 0, None)
            return LeaseView(row.holder, row.term, row.expires_at, row.cycle_running_since)

    def mark_cycle(self, since: datetime | None) -> None:
        """Record on the lease row that this leader's cycle runs (``since``) or ended."""
        with session_scope(self.engine) as session:
            session.execute(
                update(LeaderLeaseRow)
                .where(
                    LeaderLeaseRow.name == LEASE_NAME,  # type: ignore[arg-type]
                    LeaderLeaseRow.holder == self.identity,  # type: ignore[arg-type]
                )
                .values(cycle_running_since=since)
            )

    def request_replan(self) -> None:
        """A follower asks the leader for a cycle. Returns at once: a background thread writes
        the request, at most every ``REPLAN_SIGNAL_INTERVAL_S``. (The leader's apply holds the
        lease row locked while it writes a plan; an API request must not wait for that.)"""
        self._replan_wanted.set()
        if self._signaller is None:
            with self._signaller_lock:
                if self._signaller is None:
                    self._signaller = threading.Thread(
                        target=self._signal_replans, name="gpupool-replan-signal", daemon=True
                    )
                    self._signaller.start()

    def _signal_replans(self) -> None:
        while True:
            self._replan_wanted.wait()
            self._replan_wanted.clear()
            try:
                self._write_replan_request()
            except Exception:  # the leader's timer still picks the change up
                log.warning("could not signal the leader", exc_info=True)
            time.sleep(REPLAN_SIGNAL_INTERVAL_S)

    def _write_replan_request(self) -> None:
        with session_scope(self.engine) as session:
            self._ensure_row(session)
            session.execute(
                update(LeaderLeaseRow)
                .where(LeaderLeaseRow.name == LEASE_NAME)  # type: ignore[arg-type]
                .values(replan_requested_at=_wall())
            )

    def replan_requested_after(self, t: datetime) -> bool:
        with session_scope(self.engine, write=False) as session:
            row = session.get(LeaderLeaseRow, LEASE_NAME)
            return bool(row and row.replan_requested_at and row.replan_requested_at > t)
