"""Quotas per tenant and GPU class: ``guaranteed``, ``limit`` and a GPU-hour ``budget``.

Guaranteed GPUs are promises, so the guaranteed quotas of a class may not add up to more than
the class's installed GPUs: setting one that would is refused (422). When capacity later
shrinks below the promises (a node removed), the quotas stay and the planner serves them as far
as the pool allows; ``oversubscribed`` in the class listing shows it.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, select

from scheduler import budget
from scheduler.domain import BudgetPeriod, Principal
from scheduler.errors import InvalidInput, InvalidState, NotFound
from scheduler.services import audit, gpu_classes
from scheduler.services.tenants import get as get_tenant
from scheduler.tables import BudgetTopUpRow, GpuClassRow, QuotaRow


def set_quota(
    session: Session,
    who: Principal,
    now: datetime,
    tenant: str,
    gpu_class: str,
    *,
    guaranteed: int,
    limit: int,
    budget_gpu_hours: float | None = None,
    budget_period: BudgetPeriod = BudgetPeriod.MONTH,
) -> QuotaRow:
    """Create or replace the quota of ``tenant`` for ``gpu_class``."""
    get_tenant(session, tenant)
    if session.get(GpuClassRow, gpu_class) is None:
        raise InvalidInput.field("gpu_class", f"unknown GPU class {gpu_class!r}")
    if limit < guaranteed:
        raise InvalidInput.field(
            "limit", f"must be at least guaranteed ({guaranteed}), got {limit}"
        )
    others = session.exec(
        select(func.sum(QuotaRow.guaranteed)).where(
            QuotaRow.gpu_class == gpu_class, col(QuotaRow.tenant) != tenant
        )
    ).one()
    promised = int(others or 0) + guaranteed
    capacity = gpu_classes.capacity(session, gpu_class)
    if guaranteed > 0 and promised > capacity:
        raise InvalidInput.field(
            "guaranteed",
            f"guaranteed quotas of {gpu_class} would total {promised} GPUs but the pool has "
            f"{capacity}; lower this or another tenant's guarantee, or add nodes",
        )
    row = session.get(QuotaRow, (tenant, gpu_class))
    before = audit.as_dict(row)
    if row is None:
        row = QuotaRow(tenant=tenant, gpu_class=gpu_class, created_at=now, updated_at=now)
    row.guaranteed = guaranteed
    row.limit = limit
    row.budget_gpu_hours = budget_gpu_hours
    row.budget_period = budget_period.value
    row.updated_at = now
    session.add(row)
    session.flush()
    action = "quota.create" if before is None else "quota.update"
    audit.record(
        session, who, now, action, "quota", f"{tenant}/{gpu_class}", before, audit.as_dict(row)
    )
    return row


def get(session: Session, tenant: str, gpu_class: str) -> QuotaRow:
    row = session.get(QuotaRow, (tenant, gpu_class))
    if row is None:
        raise NotFound(f"tenant {tenant!r} has no quota for {gpu_class!r}")
    return row


def list_all(
    session: Session, *, tenant: str | None = None, gpu_class: str | None = None
) -> list[QuotaRow]:
    stmt = select(QuotaRow).order_by(col(QuotaRow.tenant), col(QuotaRow.gpu_class))
    if tenant:
        stmt = stmt.where(QuotaRow.tenant == tenant)
    if gpu_class:
        stmt = stmt.where(QuotaRow.gpu_class == gpu_class)
    return list(session.exec(stmt))


def delete(session: Session, who: Principal, now: datetime, tenant: str, gpu_class: str) -> None:
    row = get(session, tenant, gpu_class)
    before = audit.as_dict(row)
    session.delete(row)
    audit.record(session, who, now, "quota.delete", "quota", f"{tenant}/{gpu_class}", before, None)


def top_up(
    session: Session,
    who: Principal,
    now: datetime,
    tenant: str,
    gpu_class: str,
    *,
    gpu_hours: float,
    note: str = "",
) -> QuotaRow:
    """Add GPU-hours to the current budget period of a quota that has a budget."""
    row = get(session, tenant, gpu_class)
    if row.budget_gpu_hours is None:
        raise InvalidState(
            f"the {gpu_class} quota of {tenant!r} has no budget; set budget_gpu_hours first"
        )
    start = budget.period_start(BudgetPeriod(row.budget_period), now)
    session.add(
        BudgetTopUpRow(
            tenant=tenant,
            gpu_class=gpu_class,
            period_start=start,
            gpu_hours=gpu_hours,
            at=now,
            actor=who.actor,
            note=note,
        )
    )
    audit.record(
        session,
        who,
        now,
        "quota.top_up",
        "quota",
        f"{tenant}/{gpu_class}",
        None,
        {"gpu_hours": gpu_hours, "period_start": start.isoformat(), "note": note},
    )
    session.flush()
    return row
