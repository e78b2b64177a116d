"""Why a request waits: the binding constraint, who holds the GPUs, and queue positions.

Other tenants appear by name and GPU count only; their request ids are shown to the operator
and never to a tenant.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_
from sqlmodel import Session, col, select

from scheduler import budget
from scheduler.domain import WAITING_VALUES, Principal, RequestState, ReservationState
from scheduler.services.requests import current_reservation, get_visible
from scheduler.settings import Settings
from scheduler.tables import NodeRow, QuotaRow, RequestRow, ReservationNodeRow, ReservationRow


@dataclass
class Holder:
    tenant: str
    gpus: int
    until: datetime
    request_ids: list[int] = field(default_factory=list)


@dataclass
class Binding:
    kind: str
    detail: str
    nodes: list[str] = field(default_factory=list)
    until: datetime | None = None
    holders: list[Holder] = field(default_factory=list)


@dataclass
class QueuePosition:
    tenant: int
    gpu_class: int
    waiting_in_class: int


@dataclass
class Explanation:
    request_id: int
    state: str
    reason_code: str | None
    reason_message: str | None
    planned_start: datetime | None
    earliest_allowed: datetime
    bindings: list[Binding]
    queue: QueuePosition | None


def queue_position(session: Session, req: RequestRow) -> QueuePosition | None:
    """Place among waiting requests of the class: planned ones by start, then pending ones by
    priority and age. Counted in the database (a poll must not read the whole queue)."""
    if req.state not in WAITING_VALUES:
        return None
    waiting = col(RequestRow.state).in_(WAITING_VALUES)
    planned = col(RequestRow.planned_start).is_not(None)
    ahead: ColumnElement[bool]
    if req.planned_start is not None:
        ahead = planned & or_(
            col(RequestRow.planned_start) < req.planned_start,
            and_(col(RequestRow.planned_start) == req.planned_start, col(RequestRow.id) < req.id),
        )
    else:
        ahead = or_(
            planned,
            col(RequestRow.priority) > req.priority,
            and_(
                col(RequestRow.priority) == req.priority,
                or_(
                    col(RequestRow.submitted_at) < req.submitted_at,
                    and_(
                        col(RequestRow.submitted_at) == req.submitted_at,
                        col(RequestRow.id) < req.id,
                    ),
                ),
            ),
        )
    in_class = col(RequestRow.gpu_class) == req.gpu_class
    own = col(RequestRow.tenant) == req.tenant
    row = session.exec(
        select(
            func.count(),
            func.sum(case((ahead, 1), else_=0)),
            func.sum(case((and_(ahead, own), 1), else_=0)),
        ).where(in_class, waiting)
    ).one()
    total, before, before_own = (int(v or 0) for v in row)
    return QueuePosition(tenant=before_own + 1, gpu_class=before + 1, waiting_in_class=total)


def _holders(
    session: Session,
    who: Principal,
    gpu_class: str,
    nodes: list[str],
    lo: datetime,
    hi: datetime,
    exclude: int,
) -> list[Holder]:
    rows = session.exec(
        select(ReservationRow, ReservationNodeRow)
        .join(ReservationNodeRow, col(ReservationNodeRow.reservation_id) == col(ReservationRow.id))
        .where(
            ReservationRow.gpu_class == gpu_class,
            col(ReservationNodeRow.node).in_(nodes),
            col(ReservationRow.state).in_(
                [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]
            ),
            col(ReservationRow.start) < hi,
            col(ReservationRow.end) > lo,
            ReservationRow.request_id != exclude,
        )
    ).all()
    gpus: dict[str, int] = defaultdict(int)
    until: dict[str, datetime] = {}
    ids: dict[str, set[int]] = defaultdict(set)
    for res, share in rows:
        gpus[res.tenant] += share.gpus
        until[res.tenant] = max(until.get(res.tenant, res.end), min(res.end, hi))
        if who.is_operator or res.tenant == who.tenant:
            ids[res.tenant].add(res.request_id)
    return sorted(
        (Holder(t, gpus[t], until[t], sorted(ids.get(t, set()))) for t in gpus),
        key=lambda h: (-h.gpus, h.tenant),
    )


def explain(
    session: Session, who: Principal, now: datetime, settings: Settings, request_id: int
) -> Explanation:
    req = get_visible(session, who, request_id)
    earliest = max(now, req.not_before) if req.not_before else now
    out = Explanation(
        request_id=request_id,
        state=req.state,
        reason_code=req.reason_code,
        reason_message=req.reason_message,
        planned_start=req.planned_start,
        earliest_allowed=earliest,
        bindings=[],
        queue=queue_position(session, req),
    )
    if req.state not in WAITING_VALUES:
        return out
    if req.not_before is not None and req.not_before > now:
        out.bindings.append(
            Binding("not_before", f"It may not start before {req.not_before:%Y-%m-%d %H:%M} UTC.")
        )
    horizon_end = earliest + timedelta(seconds=settings.horizon_s)
    if req.state == RequestState.PLANNED.value and req.planned_start is not None:
        hi = req.planned_start
        view = current_reservation(session, request_id)
        nodes = list(view.allocation) if view else []
    else:
        hi = horizon_end
        nodes = [
            n.name
            for n in session.exec(select(NodeRow).where(NodeRow.gpu_class == req.gpu_class))
            if n.gpus >= req.gpus_per_node
        ]
    if hi > earliest and nodes:
        holders = _holders(session, who, req.gpu_class, nodes, earliest, hi, request_id)
        if holders:
            busy_until = max(h.until for h in holders)
            out.bindings.append(
                Binding(
                    "capacity",
                    f"The {req.gpu_class} nodes it can use are reserved until "
                    f"{busy_until:%Y-%m-%d %H:%M} UTC.",
                    nodes=sorted(nodes),
                    until=busy_until,
                    holders=holders,
                )
            )
    _quota_bindings(session, req, earliest, hi, now, out)
    _pool_bindings(session, req, out)
    return out


def _quota_bindings(
    session: Session,
    req: RequestRow,
    lo: datetime,
    hi: datetime,
    now: datetime,
    out: Explanation,
) -> None:
    quota = session.get(QuotaRow, (req.tenant, req.gpu_class))
    if quota is None:
        out.bindings.append(
            Binding("quota_limit", f"Tenant {req.tenant} has no {req.gpu_class} quota.")
        )
        return
    if hi > lo:
        own = session.exec(
            select(ReservationRow).where(
                ReservationRow.tenant == req.tenant,
                ReservationRow.gpu_class == req.gpu_class,
                col(ReservationRow.state).in_(
                    [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]
                ),
                col(ReservationRow.start) < hi,
                col(ReservationRow.end) > lo,
                ReservationRow.request_id != req.id,
            )
        ).all()
        held = sum(r.gpus for r in own if r.start <= lo)
        if held + req.gpus > quota.limit:
            out.bindings.append(
                Binding(
                    "quota_limit",
                    f"Tenant {req.tenant} already holds {held} of its limit of {quota.limit} "
                    f"{req.gpu_class} GPUs.",
                    until=min((r.end for r in own if r.start <= lo), default=None),
                    holders=[
                        Holder(
                            req.tenant,
                            held,
                            max((r.end for r in own), default=lo),
                            sorted(r.request_id for r in own),
                        )
                    ],
                )
            )
    status = budget.statuses(session, now, [quota]).get((req.tenant, req.gpu_class))
    need = req.gpus * req.duration_s / 3600
    if status is not None and status.left_gpu_h < need:
        out.bindings.append(
            Binding(
                "budget",
                f"It needs {need:.2f} GPU-hours; {status.left_gpu_h:.2f} are left until "
                f"{status.period_end:%Y-%m-%d %H:%M} UTC, when the budget renews.",
                until=status.period_end,
            )
        )


def _pool_bindings(session: Session, req: RequestRow, out: Explanation) -> None:
    down = [
        n.name
        for n in session.exec(select(NodeRow).where(NodeRow.gpu_class == req.gpu_class))
        if n.drained or not n.ready
    ]
    if down:
        out.bindings.append(
            Binding(
                "nodes_unavailable",
                f"{len(down)} {req.gpu_class} node(s) are drained or not ready.",
                nodes=sorted(down),
            )
        )
