"""Requests once stored: who may see them, their reservations, cancel, complete and fail
(submitting is :mod:`scheduler.services.submit`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlmodel import Session, col, select

from scheduler import lifecycle
from scheduler.domain import Principal, RequestState, ReservationState
from scheduler.errors import Conflict, InvalidState, NotFound
from scheduler.pagination import Page, decode_int_cursor, encode_cursor
from scheduler.tables import RequestRow, ReservationNodeRow, ReservationRow


@dataclass(slots=True)
class ReservationView:
    row: ReservationRow
    allocation: dict[str, int] = field(default_factory=dict)


def get_visible(
    session: Session, who: Principal, request_id: int, *, for_update: bool = False
) -> RequestRow:
    """The request, if ``who`` may see it; otherwise :class:`NotFound` (ids do not leak).

    ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's write
    transactions are serialised anyway). Every writer locks the request before its
    reservations, so a cancel and the cycle's apply queue up instead of deadlocking, and
    the cycle finds the row changed and leaves it alone.
    """
    row = session.get(RequestRow, request_id, with_for_update=for_update)
    if row is None or (not who.is_operator and row.tenant != who.tenant):
        raise NotFound(f"request {request_id} does not exist")
    return row


def list_page(
    session: Session,
    who: Principal,
    *,
    limit: int,
    cursor: str | None,
    state: RequestState | None = None,
    tenant: str | None = None,
    gpu_class: str | None = None,
) -> Page[RequestRow]:
    """Newest first. A tenant sees its own requests only."""
    stmt = select(RequestRow).order_by(col(RequestRow.id).desc()).limit(limit + 1)
    if not who.is_operator:
        stmt = stmt.where(RequestRow.tenant == who.tenant)
    elif tenant:
        stmt = stmt.where(RequestRow.tenant == tenant)
    if state is not None:
        stmt = stmt.where(RequestRow.state == state.value)
    if gpu_class:
        stmt = stmt.where(RequestRow.gpu_class == gpu_class)
    if cursor:
        stmt = stmt.where(col(RequestRow.id) < decode_int_cursor(cursor))
    rows = list(session.exec(stmt))
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)


def current_reservation(session: Session, request_id: int) -> ReservationView | None:
    """The request's planned or open reservation, else its most recent one."""
    rows = session.exec(
        select(ReservationRow)
        .where(ReservationRow.request_id == request_id)
        .order_by(col(ReservationRow.id).desc())
    ).all()
    if not rows:
        return None
    live = [r for r in rows if r.state != ReservationState.ENDED.value]
    row = live[0] if live else rows[0]
    return ReservationView(row, allocation_of(session, row))


def allocation_of(session: Session, row: ReservationRow) -> dict[str, int]:
    nodes = session.exec(
        select(ReservationNodeRow).where(ReservationNodeRow.reservation_id == row.id)
    ).all()
    return {n.node: n.gpus for n in sorted(nodes, key=lambda n: n.node)}


def drop_planned_reservation(session: Session, req: RequestRow) -> None:
    """Delete the request's planned (not yet open) reservation, if it has one."""
    ids = session.exec(
        select(ReservationRow.id).where(
            ReservationRow.request_id == req.id,
            ReservationRow.state == ReservationState.PLANNED.value,
        )
    ).all()
    if ids:
        session.execute(
            sql_delete(ReservationNodeRow).where(col(ReservationNodeRow.reservation_id).in_(ids))
        )
        session.execute(sql_delete(ReservationRow).where(col(ReservationRow.id).in_(ids)))


def end_active_reservation(session: Session, req: RequestRow, now: datetime, reason: str) -> None:
    """Close the request's open reservation at ``now``: its GPUs are free from then on."""
    rows = session.exec(
        select(ReservationRow).where(
            ReservationRow.request_id == req.id,
            ReservationRow.state == ReservationState.ACTIVE.value,
        )
    ).all()
    for res in rows:
        res.state = ReservationState.ENDED.value
        res.end_reason = reason
        res.ended_at = now
        res.end = min(res.end, now)
        res.preempt_at = None
        res.updated_at = now
        session.add(res)
    session.flush()


def cancel(session: Session, who: Principal, now: datetime, request_id: int) -> RequestRow:
    row = get_visible(session, who, request_id, for_update=True)
    state = RequestState(row.state)
    if state not in (RequestState.PENDING, RequestState.PLANNED, RequestState.ACTIVE):
        raise InvalidState(
            f"request {request_id} is {state.value}; only waiting or active ones can be cancelled"
        )
    drop_planned_reservation(session, row)
    end_active_reservation(session, row, now, "cancelled")
    _must(
        lifecycle.transition(
            session,
            row,
            RequestState.CANCELLED,
            now,
            reason_code="cancelled",
            message=f"Cancelled by {who.actor}.",
        ),
        request_id,
    )
    return row


def complete(
    session: Session, who: Principal, now: datetime, request_id: int, *, detail: str = ""
) -> RequestRow:
    """The work finished: the reservation ends now and its GPUs are free at once."""
    row = get_visible(session, who, request_id, for_update=True)
    if row.state != RequestState.ACTIVE.value:
        raise InvalidState(f"request {request_id} is {row.state}; only an active one can complete")
    end_active_reservation(session, row, now, "completed")
    _must(
        lifecycle.transition(
            session,
            row,
            RequestState.COMPLETED,
            now,
            reason_code="completed",
            message=detail or f"Work finished (reported by {who.actor}).",
        ),
        request_id,
    )
    return row


def fail(
    session: Session, who: Principal, now: datetime, request_id: int, reason: str
) -> RequestRow:
    """The work failed (a pod of the request failed): the reservation ends now."""
    row = get_visible(session, who, request_id, for_update=True)
    if row.state != RequestState.ACTIVE.value:
        raise InvalidState(f"request {request_id} is {row.state}; only an active one can fail")
    end_active_reservation(session, row, now, "failed")
    _must(
        lifecycle.transition(
            session, row, RequestState.FAILED, now, reason_code="failed", message=reason[:500]
        ),
        request_id,
    )
    return row


def _must(done: bool, request_id: int) -> None:
    if not done:
        raise Conflict(f"request {request_id} changed while this call ran; try again")


def events(session: Session, who: Principal, request_id: int) -> list[Any]:
    from scheduler.tables import RequestEventRow

    get_visible(session, who, request_id)
    return list(
        session.exec(
            select(RequestEventRow)
            .where(RequestEventRow.request_id == request_id)
            .order_by(col(RequestEventRow.id))
        )
    )


def current_reservations(session: Session, request_ids: list[int]) -> dict[int, ReservationView]:
    """:func:`current_reservation` for many requests in two queries."""
    if not request_ids:
        return {}
    rows = session.exec(
        select(ReservationRow)
        .where(col(ReservationRow.request_id).in_(request_ids))
        .order_by(col(ReservationRow.id).desc())
    ).all()
    chosen: dict[int, ReservationRow] = {}
    for r in rows:
        prev = chosen.get(r.request_id)
        if prev is None or (
            prev.state == ReservationState.ENDED.value and r.state != ReservationState.ENDED.value
        ):
            chosen[r.request_id] = r
    ids = [r.id for r in chosen.values()]
    allocs: dict[int, dict[str, int]] = {}
    for n in session.exec(
        select(ReservationNodeRow).where(col(ReservationNodeRow.reservation_id).in_(ids))
    ):
        allocs.setdefault(n.reservation_id, {})[n.node] = n.gpus
    return {
        rid: ReservationView(r, dict(sorted(allocs.get(r.id or 0, {}).items())))
        for rid, r in chosen.items()
    }
