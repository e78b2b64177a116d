"""The plan and the audit log (operator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from sqlmodel import col, select

from api.deps import Ctx, Operator
from api.routers.params import Cursor, Limit
from api.schemas.common import PROBLEM_RESPONSES, ClassName, NodeName, Page, TenantName
from api.schemas.plan import AuditPublic, CyclePublic, PlanPublic, SchedulerStatus
from api.schemas.requests import ReservationPublic
from scheduler.errors import InvalidInput
from scheduler.services import audit
from scheduler.services import plan as plan_service
from scheduler.tables import CycleRunRow

router = APIRouter(prefix="/v1", tags=["plan"], responses=PROBLEM_RESPONSES)


@router.get("/plan", response_model=PlanPublic, summary="All reservations in a time range")
def get_plan(
    ctx: Ctx,
    who: Operator,
    start: Annotated[AwareDatetime | None, Query(description="Default: now.")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Default: start + 7 days.")] = None,
    gpu_class: ClassName | None = None,
    tenant: TenantName | None = None,
    node: NodeName | None = None,
) -> PlanPublic:
    start = start or ctx.clock.now()
    end = end or start + timedelta(days=7)
    if end <= start:
        raise InvalidInput.field("end", "must be after start")
    with ctx.read() as s:
        views = plan_service.reservations_between(
            s, start, end, gpu_class=gpu_class, tenant=tenant, node=node
        )
        last = s.exec(select(CycleRunRow).order_by(col(CycleRunRow.id).desc()).limit(1)).first()
        return PlanPublic(
            start=start,
            end=end,
            reservations=[ReservationPublic.of(v) for v in views],
            last_cycle=CyclePublic.of(last) if last else None,
        )


@router.get(
    "/audit-log", response_model=Page[AuditPublic], summary="Operator changes, newest first"
)
def audit_log(
    ctx: Ctx,
    who: Operator,
    limit: Limit = 50,
    cursor: Cursor = None,
    object_type: Annotated[str | None, Query(max_length=30)] = None,
    object_id: Annotated[str | None, Query(max_length=253)] = None,
    action: Annotated[str | None, Query(max_length=50)] = None,
) -> Page[AuditPublic]:
    with ctx.read() as s:
        page = audit.list_entries(
            s,
            limit=limit,
            cursor=cursor,
            object_type=object_type,
            object_id=object_id,
            action=action,
        )
        return Page(items=[AuditPublic.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/scheduler", response_model=SchedulerStatus, summary="Replicas, leader, last cycle")
def scheduler_status(ctx: Ctx, who: Operator) -> SchedulerStatus:
    runner, lease = ctx.runner, ctx.lease
    view = lease.view() if lease else None
    with ctx.read() as s:
        last = s.exec(select(CycleRunRow).order_by(col(CycleRunRow.id).desc()).limit(1)).first()
    if runner is not None:
        is_leader, running = runner.is_leader, runner.running_since
    else:  # cycles run in this replica's scheduler process: the lease row tells
        now = datetime.now(UTC)
        is_leader = bool(
            view
            and lease
            and view.holder == lease.identity
            and view.expires_at
            and view.expires_at > now
        )
        running = view.cycle_running_since if view else None
    return SchedulerStatus(
        replica=lease.identity if lease else "embedded",
        is_leader=is_leader,
        leader=view.holder if view else None,
        term=view.term if view else None,
        lease_expires_at=view.expires_at if view else None,
        cycles_run_here=runner.cycles if runner else None,
        cycle_running_since=running,
        last_cycle=CyclePublic.of(last) if last else None,
    )
