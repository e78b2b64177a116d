"""Phase one of a cycle: one read transaction turned into an immutable planning problem."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, cast

from sqlmodel import Session, col, select

import solver
from scheduler import budget, reasons
from scheduler.clock import to_epoch, to_epoch_ceil
from scheduler.domain import WAITING_VALUES, ReservationState
from scheduler.settings import Settings
from scheduler.tables import (
    NodeRow,
    QuotaRow,
    RequestRow,
    ReservationNodeRow,
    ReservationRow,
    TenantRow,
    TenantUsageRow,
)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PlannedRef:
    """A request's planned (not yet open) reservation as stored."""

    reservation_id: int
    assignment: solver.Assignment


@dataclass(frozen=True, slots=True)
class RequestRef:
    """A waiting request's columns as the apply phase needs them (a plain row: the cycle
    reads every waiting request, and ORM instances would cost more than the planning)."""

    id: int
    tenant: str
    gpu_class: str
    gpus: int
    state: str
    version: int
    planned_start: datetime | None
    planned_end: datetime | None
    first_planned_start: datetime | None
    promised_start: datetime | None
    reason_code: str | None
    reason_message: str | None


@dataclass(frozen=True)
class Snapshot:
    """What a cycle decides on. ``refs`` holds each waiting request as read, its row version
    included, so the apply phase can decide its writes without reading again and leave alone
    any request that changed after the snapshot."""

    now: datetime
    problem: solver.Problem
    refs: dict[int, RequestRef]
    rejections: dict[int, Rejection]
    deferred: dict[int, tuple[str, str]]
    planned: dict[int, PlannedRef]
    active_ends: dict[int, datetime]  # open reservation id -> its end as read
    contexts: dict[int, reasons.Context] = field(default_factory=dict)


class _WaitingRow(Protocol):
    """A waiting request's columns as ``take`` selects them: a SQLAlchemy ``Row``, read by name
    (the stubs cannot type a row's attributes)."""

    @property
    def id(self) -> int: ...
    @property
    def tenant(self) -> str: ...
    @property
    def gpu_class(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def gpus_per_node(self) -> int: ...
    @property
    def duration_s(self) -> int: ...
    @property
    def submitted_at(self) -> datetime: ...
    @property
    def not_before(self) -> datetime | None: ...
    @property
    def deadline(self) -> datetime | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def preemptible(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def promised_start(self) -> datetime | None: ...
    @property
    def state(self) -> str: ...
    @property
    def planned_start(self) -> datetime | None: ...
    @property
    def planned_end(self) -> datetime | None: ...
    @property
    def first_planned_start(self) -> datetime | None: ...
    @property
    def reason_code(self) -> str | None: ...
    @property
    def reason_message(self) -> str | None: ...


class _LiveRow(Protocol):
    """A planned or open reservation's columns as ``take`` selects them (a ``Row``, as above)."""

    @property
    def id(self) -> int: ...
    @property
    def request_id(self) -> int: ...
    @property
    def tenant(self) -> str: ...
    @property
    def gpu_class(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...


def _live_allocations(session: Session) -> dict[int, dict[str, int]]:
    """GPUs per node of every planned or open reservation, in one query."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    rows = session.exec(
        select(ReservationNodeRow.reservation_id, ReservationNodeRow.node, ReservationNodeRow.gpus)
        .join(ReservationRow, col(ReservationRow.id) == col(ReservationNodeRow.reservation_id))
        .where(col(ReservationRow.state).in_(_LIVE))
    )
    for reservation_id, node, gpus in rows:
        out[reservation_id][node] = gpus
    return out


_LIVE = [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]


def take(session: Session, now: datetime, settings: Settings) -> Snapshot:
    now_s = to_epoch_ceil(now)
    horizon_end = now + timedelta(seconds=settings.horizon_s)
    nodes = list(session.exec(select(NodeRow).order_by(col(NodeRow.name))))
    tenants = {t.name: t for t in session.exec(select(TenantRow)) if t.active}
    quota_rows = {(q.tenant, q.gpu_class): q for q in session.exec(select(QuotaRow))}
    # Plain column rows, not ORM objects: a cycle reads every waiting request, and building
    # tens of thousands of ORM instances would dominate its time.
    # sqlmodel's select() is typed for at most four columns; at run time it takes any number.
    waiting_stmt = (
        select(  # type: ignore[call-overload]
            col(RequestRow.id),
            col(RequestRow.tenant),
            col(RequestRow.gpu_class),
            col(RequestRow.gpus),
            col(RequestRow.gpus_per_node),
            col(RequestRow.duration_s),
            col(RequestRow.submitted_at),
            col(RequestRow.not_before),
            col(RequestRow.deadline),
            col(RequestRow.priority),
            col(RequestRow.preemptible),
            col(RequestRow.version),
            col(RequestRow.promised_start),
            col(RequestRow.state),
            col(RequestRow.planned_start),
            col(RequestRow.planned_end),
            col(RequestRow.first_planned_start),
            col(RequestRow.reason_code),
            col(RequestRow.reason_message),
        )
        .where(col(RequestRow.state).in_(WAITING_VALUES))
        .order_by(col(RequestRow.id))
    )
    waiting = cast("Sequence[_WaitingRow]", session.exec(waiting_stmt).all())
    live_stmt = select(  # type: ignore[call-overload]
        col(ReservationRow.id),
        col(ReservationRow.request_id),
        col(ReservationRow.tenant),
        col(ReservationRow.gpu_class),
        col(ReservationRow.start),
        col(ReservationRow.end),
        col(ReservationRow.kind),
        col(ReservationRow.state),
    ).where(col(ReservationRow.state).in_(_LIVE))
    live = cast("Sequence[_LiveRow]", session.exec(live_stmt).all())
    allocations = _live_allocations(session)
    budgets = budget.statuses(session, now, list(quota_rows.values()))
    usage = {u.tenant: u.decayed_gpu_s for u in session.exec(select(TenantUsageRow))}

    problem_tenants: dict[str, solver.Tenant] = {}
    for name, t in tenants.items():
        quotas: dict[str, solver.Quota] = {}
        for (tenant, cls), q in quota_rows.items():
            if tenant != name:
                continue
            status = budgets.get((tenant, cls))
            left = status.left_gpu_h * 3600 if status is not None else None
            quotas[cls] = solver.Quota(q.guaranteed, q.limit, left)
        problem_tenants[name] = solver.Tenant(
            name=name, quotas=quotas, weight=t.weight, usage=usage.get(name, 0.0)
        )

    biggest_gangs: dict[tuple[str, int], int] = defaultdict(int)
    for n in nodes:
        for size in range(1, n.gpus + 1):
            biggest_gangs[(n.gpu_class, size)] += 1

    requests: list[solver.Request] = []
    refs: dict[int, RequestRef] = {}
    rejections: dict[int, Rejection] = {}
    deferred: dict[int, tuple[str, str]] = {}
    contexts: dict[int, reasons.Context] = {}
    for r in waiting:
        assert r.id is not None
        refs[r.id] = RequestRef(
            r.id,
            r.tenant,
            r.gpu_class,
            r.gpus,
            r.state,
            r.version,
            r.planned_start,
            r.planned_end,
            r.first_planned_start,
            r.promised_start,
            r.reason_code,
            r.reason_message,
        )
        quota = quota_rows.get((r.tenant, r.gpu_class))
        contexts[r.id] = reasons.Context(
            gpus=r.gpus,
            gpu_class=r.gpu_class,
            tenant=r.tenant,
            limit=quota.limit if quota else 0,
            guaranteed=quota.guaranteed if quota else 0,
            budget_left_gpu_h=(
                budgets[(r.tenant, r.gpu_class)].left_gpu_h
                if (r.tenant, r.gpu_class) in budgets
                else None
            ),
            need_gpu_h=r.gpus * r.duration_s / 3600,
        )
        rejection = _admissible(r, quota, biggest_gangs, now)
        if rejection is not None:
            rejections[r.id] = rejection
            continue
        if r.tenant not in problem_tenants:
            continue
        if r.not_before is not None and r.not_before >= horizon_end:
            deferred[r.id] = (
                reasons.NOT_BEFORE_BEYOND_HORIZON,
                f"It may not start before {r.not_before:%Y-%m-%d %H:%M} UTC, beyond the "
                f"{settings.horizon_s // 86400}-day planning horizon; it will be planned later.",
            )
            continue
        requests.append(
            solver.Request(
                id=r.id,
                tenant=r.tenant,
                gpu_class=r.gpu_class,
                gpus=r.gpus,
                gpus_per_node=r.gpus_per_node,
                duration_s=r.duration_s,
                submitted_at=to_epoch(r.submitted_at),
                not_before=to_epoch(r.not_before) if r.not_before else None,
                deadline=to_epoch(r.deadline) if r.deadline else None,
                priority=r.priority,
                preemptible=r.preemptible,
            )
        )

    running: list[solver.Running] = []
    planned: dict[int, PlannedRef] = {}
    active_ends: dict[int, datetime] = {}
    waiting_ids = {r.id for r in requests}
    priorities = {r.id: (r.priority, r.preemptible) for r in waiting}
    active_ids = [r.request_id for r in live if r.state == ReservationState.ACTIVE.value]
    for start in range(0, len(active_ids), 500):
        for rid, priority, preemptible in session.exec(
            select(RequestRow.id, RequestRow.priority, RequestRow.preemptible).where(
                col(RequestRow.id).in_(active_ids[start : start + 500])
            )
        ):
            priorities[cast(int, rid)] = (priority, preemptible)  # a stored row's id
    for res in live:
        assert res.id is not None
        alloc = solver.allocation_of(allocations.get(res.id, {}))
        kind = solver.ReservationKind(res.kind)
        if res.state == ReservationState.ACTIVE.value:
            active_ends[res.id] = res.end
            priority, preemptible = priorities.get(res.request_id, (0, True))
            running.append(
                solver.Running(
                    request_id=res.request_id,
                    tenant=res.tenant,
                    gpu_class=res.gpu_class,
                    allocation=alloc,
                    start=to_epoch(res.start),
                    end=to_epoch(res.end),
                    kind=kind,
                    priority=priority,
                    preemptible=preemptible,
                )
            )
        elif res.request_id in refs:
            planned[res.request_id] = PlannedRef(
                res.id,
                solver.Assignment(
                    res.request_id, alloc, to_epoch(res.start), to_epoch(res.end), kind
                ),
            )

    problem = solver.Problem(
        now=now_s,
        nodes=tuple(
            solver.Node(n.name, n.gpu_class, n.gpus, schedulable=n.ready and not n.drained)
            for n in nodes
        ),
        tenants=problem_tenants,
        requests=tuple(requests),
        running=tuple(running),
        previous={rid: p.assignment for rid, p in planned.items() if rid in waiting_ids},
        promised={
            r.id: to_epoch_ceil(r.promised_start)
            for r in waiting
            if r.id in waiting_ids and r.promised_start is not None
        },
        horizon_s=settings.horizon_s,
        resolution_s=settings.resolution_s,
        min_runtime_s=settings.min_runtime_s,
    )
    return Snapshot(
        now=now,
        problem=problem,
        refs=refs,
        rejections=rejections,
        deferred=deferred,
        planned=planned,
        active_ends=active_ends,
        contexts=contexts,
    )


def _admissible(
    r: _WaitingRow,
    quota: QuotaRow | None,
    gangs: dict[tuple[str, int], int],
    now: datetime,
) -> Rejection | None:
    """Why ``r`` can never be met as the pool and quotas stand, or ``None``."""
    limit = quota.limit if quota else 0
    if r.gpus > limit:
        return Rejection(
            "quota_exhausted",
            f"It asks for {r.gpus} {r.gpu_class} GPUs and tenant {r.tenant}'s limit is {limit}; "
            f"ask the hub operator to raise the limit, then submit again.",
        )
    if not r.preemptible and r.gpus > (quota.guaranteed if quota else 0):
        return Rejection(
            "no_guaranteed_quota",
            f"A non-preemptible request must fit the guaranteed quota "
            f"({quota.guaranteed if quota else 0} {r.gpu_class} GPUs); submit it as "
            f"preemptible to borrow idle GPUs.",
        )
    needed = r.gpus // r.gpus_per_node
    if gangs.get((r.gpu_class, r.gpus_per_node), 0) < needed:
        return Rejection(
            "too_large_for_pool",
            f"It needs {needed} {r.gpu_class} nodes with {r.gpus_per_node} GPUs each; the pool "
            f"has {gangs.get((r.gpu_class, r.gpus_per_node), 0)}.",
        )
    if r.deadline is not None and now + timedelta(seconds=r.duration_s) > r.deadline:
        return Rejection(
            "deadline_unreachable",
            f"It can no longer finish by its deadline {r.deadline:%Y-%m-%d %H:%M} UTC.",
        )
    return None
