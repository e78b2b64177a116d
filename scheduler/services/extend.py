"""Extending an open reservation: only where the current plan has room for it."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from scheduler import budget, lifecycle
from scheduler.db import PLAN_WINDOWS_LOCK, take_turns
from scheduler.domain import Principal, RequestState, ReservationKind, ReservationState
from scheduler.errors import Conflict, InvalidInput, InvalidState, NoRoom
from scheduler.services.requests import allocation_of, get_visible
from scheduler.settings import Settings
from scheduler.tables import NodeRow, QuotaRow, RequestRow, ReservationNodeRow, ReservationRow


def _peak(intervals: list[tuple[datetime, datetime, int]]) -> int:
    events: list[tuple[datetime, int]] = []
    for a, b, g in intervals:
        events += [(a, g), (b, -g)]
    level = peak = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        level += d
        peak = max(peak, level)
    return peak


def extend(
    session: Session,
    who: Principal,
    now: datetime,
    settings: Settings,
    request_id: int,
    extra: timedelta,
) -> RequestRow:
    """Lengthen an active request's window by ``extra``, or refuse with what is in the way."""
    req = get_visible(session, who, request_id, for_update=True)
    if req.state != RequestState.ACTIVE.value:
        raise InvalidState(
            f"request {request_id} is {req.state}; only an active one can be extended"
        )
    seconds = extra.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise InvalidInput.field("duration", "must be a positive whole number of seconds")
    if req.duration_s + seconds > settings.max_duration_s:
        raise InvalidInput.field(
            "duration", f"the total would exceed the maximum of {settings.max_duration_s} s"
        )
    res = session.exec(
        select(ReservationRow).where(
            ReservationRow.request_id == request_id,
            ReservationRow.state == ReservationState.ACTIVE.value,
        )
    ).one()
    old_end, new_end = res.end, res.end + extra
    if req.deadline is not None and new_end > req.deadline:
        raise InvalidInput.field("duration", "the window would end after the request's deadline")
    # A cycle writing its plan takes this turn too: one of the two sees the other's writes
    # (scheduler.apply); the request row is locked already, the turn comes last.
    take_turns(session, PLAN_WINDOWS_LOCK)
    allocation = allocation_of(session, res)
    _check_nodes(session, res, allocation, old_end, new_end)
    _check_quota(session, req, res, old_end, new_end, now, seconds)

    res.end = new_end
    res.updated_at = now
    session.add(res)
    session.flush()
    done = lifecycle.touch(
        session,
        req,
        now,
        {"duration_s": req.duration_s + int(seconds), "planned_end": new_end},
        event="extended",
        message=f"Window extended by {int(seconds)} s to {new_end:%Y-%m-%d %H:%M:%S} UTC.",
        data={"from": old_end.isoformat(), "to": new_end.isoformat()},
    )
    if not done:
        raise Conflict(f"request {request_id} changed while this call ran; try again")
    return req


def _check_nodes(
    session: Session,
    res: ReservationRow,
    allocation: dict[str, int],
    old_end: datetime,
    new_end: datetime,
) -> None:
    rows = session.exec(
        select(ReservationRow, ReservationNodeRow)
        .join(ReservationNodeRow, col(ReservationNodeRow.reservation_id) == col(ReservationRow.id))
        .where(
            col(ReservationNodeRow.node).in_(list(allocation)),
            col(ReservationRow.state).in_(
                [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]
            ),
            col(ReservationRow.id) != res.id,
            col(ReservationRow.start) < new_end,
            col(ReservationRow.end) > old_end,
        )
    ).all()
    by_node: dict[str, list[tuple[datetime, datetime, int]]] = {}
    first_conflict: dict[str, datetime] = {}
    for other, share in rows:
        by_node.setdefault(share.node, []).append((other.start, other.end, share.gpus))
    for node_name, gpus in allocation.items():
        node = session.get(NodeRow, node_name)
        size = node.gpus if node else 0
        busy = by_node.get(node_name, [])
        if _peak(busy) + gpus > size:
            first_conflict[node_name] = min(max(a, old_end) for a, _, _ in busy)
    if first_conflict:
        node_name, when = min(first_conflict.items(), key=lambda kv: kv[1])
        raise NoRoom(
            f"node {node_name} is reserved for other work from {when:%Y-%m-%d %H:%M:%S} UTC; "
            f"the window can be extended by at most {int((when - old_end).total_seconds())} s"
        )


def _check_quota(
    session: Session,
    req: RequestRow,
    res: ReservationRow,
    old_end: datetime,
    new_end: datetime,
    now: datetime,
    seconds: float,
) -> None:
    quota = session.get(QuotaRow, (req.tenant, req.gpu_class))
    if quota is None:
        raise NoRoom(f"tenant {req.tenant!r} has no {req.gpu_class} quota any more")
    own = session.exec(
        select(ReservationRow).where(
            ReservationRow.tenant == req.tenant,
            ReservationRow.gpu_class == req.gpu_class,
            col(ReservationRow.state).in_(
                [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]
            ),
            col(ReservationRow.id) != res.id,
            col(ReservationRow.start) < new_end,
            col(ReservationRow.end) > old_end,
        )
    ).all()
    if _peak([(r.start, r.end, r.gpus) for r in own]) + req.gpus > quota.limit:
        raise NoRoom(
            f"your other {req.gpu_class} reservations would take the tenant past its limit of "
            f"{quota.limit} GPUs during the extension"
        )
    if res.kind == ReservationKind.GUARANTEED.value:
        guaranteed = [
            (r.start, r.end, r.gpus) for r in own if r.kind == ReservationKind.GUARANTEED.value
        ]
        if _peak(guaranteed) + req.gpus > quota.guaranteed:
            raise NoRoom("your guaranteed quota is planned for other requests during the extension")
    status = budget.statuses(session, now, [quota]).get((req.tenant, req.gpu_class))
    if status is not None and status.left_gpu_h * 3600 < req.gpus * seconds:
        raise NoRoom(
            f"the extension needs {req.gpus * seconds / 3600:.2f} GPU-hours and the budget has "
            f"{status.left_gpu_h:.2f} left this period"
        )
