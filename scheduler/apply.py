"""Last phase of a cycle: write a validated plan, in one transaction per part
(:func:`scheduler.intents.split`).

The writes come decided (:mod:`scheduler.intents`). Every request is guarded by the version
it had in the snapshot; one that changed since (a cancel, say) is left to the next cycle.
Opening a reservation re-checks the nodes' free GPUs against the open reservations in the
database, so a plan built on a stale snapshot can never double-book a GPU; and no part is
written once an open reservation was extended after the snapshot, so the stored future plan
never over-commits the longer window either.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, insert, or_, update
from sqlalchemy import delete as sql_delete
from sqlmodel import Session, col, select

import solver
from scheduler import lifecycle
from scheduler.clock import from_epoch
from scheduler.db import PLAN_WINDOWS_LOCK, UTCDateTime, take_turns
from scheduler.domain import RequestState, ReservationState
from scheduler.intents import Intent, Outcome, Prepared
from scheduler.snapshot import RequestRef, Snapshot
from scheduler.tables import NodeRow, RequestRow, ReservationNodeRow, ReservationRow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Applied:
    """What an apply did. ``stale`` counts the writes refused because the request changed
    since the snapshot (or, for an opening, because its nodes are no longer free); a request
    whose plan asks for no write is counted as planned or pending as it stands."""

    activated: int = 0
    planned: int = 0
    pending: int = 0
    rejected: int = 0
    preempted: int = 0
    stale: int = 0


def _open_usage(session: Session) -> dict[str, int]:
    rows = session.exec(
        select(ReservationNodeRow.node, func.sum(ReservationNodeRow.gpus))
        .join(ReservationRow, col(ReservationRow.id) == col(ReservationNodeRow.reservation_id))
        .where(ReservationRow.state == ReservationState.ACTIVE.value)
        .group_by(ReservationNodeRow.node)
    ).all()
    return {node: int(total or 0) for node, total in rows}


class ReservationWriter:
    """Collects the cycle's reservation writes and sends them in a few bulk statements (a
    re-plan may move hundreds of planned reservations; one ORM round trip each was most of
    the apply phase)."""

    def __init__(self, session: Session, now: datetime) -> None:
        self._session = session
        self._now = now
        self._new: list[tuple[RequestRef, solver.Assignment, ReservationState, datetime]] = []
        self._moved: list[tuple[int, solver.Assignment, ReservationState, datetime]] = []

    def put(
        self,
        req: RequestRef,
        a: solver.Assignment,
        state: ReservationState,
        existing_id: int | None,
        *,
        opens: bool = False,
    ) -> None:
        """``opens``: this write opens the reservation, which then starts no earlier than the
        apply's ``now``. The plan starts it at the snapshot's time (rounded up to the second),
        which can be earlier than the end recorded by a cancel or completion that committed
        before the snapshot read its nodes: without the floor the two windows would overlap
        on record by up to a second, although the GPUs were free when it opened."""
        start = from_epoch(a.start)
        if opens:
            start = max(start, self._now)
        if existing_id is None:
            self._new.append((req, a, state, start))
        else:
            self._moved.append((existing_id, a, state, start))

    def flush(self) -> None:
        res, nodes = ReservationRow.__table__, ReservationNodeRow.__table__  # type: ignore[attr-defined]
        node_rows: list[dict[str, object]] = []
        if self._moved:
            self._session.execute(
                update(res)
                .where(res.c.id == bindparam("b_id"))
                .values(
                    start=bindparam("b_start", type_=UTCDateTime),
                    end=bindparam("b_end", type_=UTCDateTime),
                    kind=bindparam("b_kind"),
                    state=bindparam("b_state"),
                    updated_at=bindparam("b_now", type_=UTCDateTime),
                    version=res.c.version + 1,
                ),
                [
                    {
                        "b_id": rid,
                        "b_start": start,
                        "b_end": from_epoch(a.end),
                        "b_kind": a.kind.value,
                        "b_state": state.value,
                        "b_now": self._now,
                    }
                    for rid, a, state, start in self._moved
                ],
            )
            ids = [rid for rid, *_ in self._moved]
            for i in range(0, len(ids), 500):
                self._session.execute(
                    sql_delete(nodes).where(nodes.c.reservation_id.in_(ids[i : i + 500]))
                )
            node_rows += [
                {"reservation_id": rid, "node": n, "gpus": g}
                for rid, a, *_ in self._moved
                for n, g in a.allocation
            ]
        if self._new:
            # Matched by request (one new reservation each), not by position: RETURNING in
            # parameter order makes SQLite insert one row per statement.
            created = self._session.execute(
                insert(res).returning(res.c.request_id, res.c.id),
                [
                    {
                        "request_id": req.id,
                        "tenant": req.tenant,
                        "gpu_class": req.gpu_class,
                        "gpus": req.gpus,
                        "start": start,
                        "end": from_epoch(a.end),
                        "kind": a.kind.value,
                        "state": state.value,
                        "created_at": self._now,
                        "updated_at": self._now,
                        "version": 1,
                    }
                    for req, a, state, start in self._new
                ],
            )
            new_ids = {request_id: rid for request_id, rid in created}
            for req, a, *_ in self._new:
                node_rows += [
                    {"reservation_id": new_ids[req.id], "node": n, "gpus": g}
                    for n, g in a.allocation
                ]
        if node_rows:
            self._session.execute(insert(nodes), node_rows)
        self._new.clear()
        self._moved.clear()


def apply_plan(session: Session, prepared: Prepared) -> Applied:
    """Write a prepared plan (or one part of it) in the caller's transaction."""
    snap, now = prepared.snap, prepared.now
    out = Applied()
    # Preemptions first: they return the GPUs that new reservations may open on. Those due
    # later are recorded on the victim (and reclaims the plan no longer wants are dropped),
    # so the stored plan never double-books and the borrower sees when its GPUs go back.
    if prepared.first:
        later: dict[int, solver.Preemption] = {}
        for p in prepared.plan.preemptions:
            if p.at > snap.problem.now and from_epoch(p.at) > now:
                later[p.request_id] = p
            else:
                out.preempted += _preempt(session, p, now)
        _schedule_reclaims(session, later, now)

    # An opening re-checks its nodes against the reservations open in the database now. It
    # counts as taken from here on; if its own write then turns out stale, its GPUs stay
    # free until the next cycle, which is the safe side.
    usage: dict[str, int] = {}
    capacity: dict[str, int] = {}
    if any(it.outcome is Outcome.ACTIVATE for it in prepared.intents):
        usage = _open_usage(session)
        capacity = {
            n.name: n.gpus for n in session.exec(select(NodeRow)) if n.ready and not n.drained
        }
    accepted: list[Intent] = []
    for it in prepared.intents:
        if it.outcome is Outcome.ACTIVATE and it.assignment is not None:
            alloc = it.assignment.allocation
            if any(usage.get(n, 0) + g > capacity.get(n, 0) for n, g in alloc):
                log.warning("request %s: nodes no longer free, left to the next cycle", it.ref.id)
                out.stale += 1
                continue
            for n, g in alloc:
                usage[n] = usage.get(n, 0) + g
        accepted.append(it)
    written = lifecycle.write_many(session, [it.change for it in accepted if it.change])

    writer = ReservationWriter(session, now)
    dropped: list[int] = []
    for it in accepted:
        if it.change is not None and it.ref.id not in written:
            out.stale += 1  # changed since the snapshot (a cancel, say): the next cycle sees it
            continue
        if it.reservation is not None and it.assignment is not None:
            opens = it.outcome is Outcome.ACTIVATE
            writer.put(it.ref, it.assignment, it.reservation, it.existing, opens=opens)
        if it.outcome in (Outcome.WAIT, Outcome.REJECT) and it.existing is not None:
            dropped.append(it.existing)
        if it.outcome is Outcome.ACTIVATE:
            out.activated += 1
        elif it.outcome is Outcome.PLAN:
            out.planned += 1
        elif it.outcome is Outcome.WAIT:
            out.pending += 1
        else:
            out.rejected += 1
    writer.flush()
    _drop_reservations(session, dropped)
    _check_extensions(session, snap)
    return out


class Extended(RuntimeError):
    """An open reservation was extended after the snapshot: the plan may put new work in its
    longer window, so the part being written is rolled back and the rest left to the next
    cycle (the extension asked for one)."""


def _check_extensions(session: Session, snap: Snapshot) -> None:
    """Raise :class:`Extended` if an open reservation of the snapshot ends later now.

    Extensions and these checks take turns (:func:`scheduler.db.take_turns`) until their
    transactions commit: either the extension committed first and this check sees it, or it
    checks the plan after this part is in it."""
    take_turns(session, PLAN_WINDOWS_LOCK)
    rows = session.exec(
        select(ReservationRow.id, ReservationRow.end).where(
            ReservationRow.state == ReservationState.ACTIVE.value
        )
    )
    longer = sorted(
        rid for rid, end in rows if rid in snap.active_ends and end > snap.active_ends[rid]
    )
    if longer:
        raise Extended(
            f"reservation {longer[0]} was extended after the snapshot; the rest of the plan "
            "is left to the next cycle"
        )


def merge(a: Applied, b: Applied) -> Applied:
    """The counts of two parts of one apply together."""
    return Applied(*(x + y for x, y in zip(astuple(a), astuple(b), strict=True)))


def _drop_reservations(session: Session, ids: list[int]) -> None:
    nodes, res = ReservationNodeRow.__table__, ReservationRow.__table__  # type: ignore[attr-defined]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        session.execute(sql_delete(nodes).where(nodes.c.reservation_id.in_(chunk)))
        session.execute(sql_delete(res).where(res.c.id.in_(chunk)))


def _preempt(session: Session, p: solver.Preemption, now: datetime) -> int:
    # The request first, locked, then its reservation: every writer takes them in this
    # order, so a concurrent cancel waits instead of deadlocking.
    req = session.get(RequestRow, p.request_id, with_for_update=True, populate_existing=True)
    if req is None or req.state != RequestState.ACTIVE.value:
        return 0
    from scheduler.services.requests import end_active_reservation

    message = f"Borrowed GPUs reclaimed for tenant {p.for_tenant}'s guaranteed quota."
    if not lifecycle.transition(
        session,
        req,
        RequestState.PREEMPTED,
        now,
        reason_code="preempted",
        message=message,
        data={"for_tenant": p.for_tenant},
    ):
        return 0
    end_active_reservation(session, req, now, "preempted")
    if req.requeue_on_preemption:
        lifecycle.transition(
            session,
            req,
            RequestState.PENDING,
            now,
            reason_code="requeued_after_preemption",
            message=message + " Requeued; the next cycle plans it again.",
        )
    return 1


def _schedule_reclaims(
    session: Session, later: dict[int, solver.Preemption], now: datetime
) -> None:
    which = (
        ReservationRow.state == ReservationState.ACTIVE.value,
        or_(
            col(ReservationRow.preempt_at).is_not(None),
            col(ReservationRow.request_id).in_(list(later)),
        ),
    )
    # Their requests first, then the reservations: the order every writer locks them in (a
    # cancel holds its request and then ends the reservation; the other order deadlocks).
    request_ids = sorted(set(session.exec(select(ReservationRow.request_id).where(*which))))
    if request_ids:
        session.exec(
            select(RequestRow.id)
            .where(col(RequestRow.id).in_(request_ids))
            .order_by(col(RequestRow.id))
            .with_for_update()
        ).all()
    rows = session.exec(
        select(ReservationRow)
        .where(*which)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for res in rows:
        want = later.get(res.request_id)
        at = from_epoch(want.at) if want else None
        if at == res.preempt_at and (want is None or want.for_tenant == res.preempt_for):
            continue
        res.preempt_at = at
        res.preempt_for = want.for_tenant if want else None
        res.updated_at = now
        session.add(res)
        if want is not None and at is not None:
            lifecycle.record_event(
                session,
                res.request_id,
                now,
                "reclaim_scheduled",
                f"Borrowed GPUs will be reclaimed at {at:%Y-%m-%d %H:%M:%S} UTC for tenant "
                f"{want.for_tenant}'s guaranteed quota.",
                data={"at": at.isoformat(), "for_tenant": want.for_tenant},
            )
        else:
            lifecycle.record_event(
                session, res.request_id, now, "reclaim_cancelled", "The scheduled reclaim is off."
            )
    session.flush()


def close_ended(session: Session, now: datetime) -> int:
    """Open reservations whose window has passed end; their requests expire."""
    due = session.exec(
        select(ReservationRow.id, ReservationRow.request_id).where(
            ReservationRow.state == ReservationState.ACTIVE.value,
            col(ReservationRow.end) <= now,
        )
    ).all()
    closed = 0
    for res_id, request_id in due:
        # Request first, then reservation (the order every writer locks them in).
        req = session.get(RequestRow, request_id, with_for_update=True, populate_existing=True)
        res = session.get(ReservationRow, res_id, with_for_update=True, populate_existing=True)
        if res is None or res.state != ReservationState.ACTIVE.value:
            continue  # ended meanwhile (a cancel or a completion)
        if req is not None and req.state == RequestState.ACTIVE.value:
            lifecycle.transition(
                session,
                req,
                RequestState.EXPIRED,
                now,
                reason_code="window_ended",
                message="The reservation window ended before the work reported completion.",
                values={"ended_at": res.end},
            )
        res.state = ReservationState.ENDED.value
        res.end_reason = "window_ended"
        res.ended_at = res.end
        res.updated_at = now
        session.add(res)
        closed += 1
    session.flush()
    return closed


def next_event(session: Session, now: datetime) -> datetime | None:
    """The next moment a cycle must run even if nothing else happens: a planned start, an
    open window's end, or a waiting request's ``not_before``."""
    candidates = [
        session.exec(
            select(func.min(ReservationRow.start)).where(
                ReservationRow.state == ReservationState.PLANNED.value,
                col(ReservationRow.start) > now,
            )
        ).one(),
        session.exec(
            select(func.min(ReservationRow.end)).where(
                ReservationRow.state == ReservationState.ACTIVE.value,
            )
        ).one(),
        session.exec(
            select(func.min(RequestRow.not_before)).where(
                col(RequestRow.state).in_(["pending", "planned"]),
                col(RequestRow.not_before) > now,
            )
        ).one(),
    ]
    found = [c for c in candidates if c is not None]
    return min(found) if found else None
