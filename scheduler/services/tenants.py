"""Tenants: the organisations that use the hub."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from scheduler import lifecycle
from scheduler.domain import WAITING_VALUES, Principal, RequestState
from scheduler.pagination import Page
from scheduler.services import audit
from scheduler.services.common import get_or_404, insert_unique, page_by_name
from scheduler.tables import RequestRow, TenantRow


def create(
    session: Session,
    who: Principal,
    now: datetime,
    *,
    name: str,
    display_name: str = "",
    weight: float = 1.0,
    priority: int = 0,
) -> TenantRow:
    row = TenantRow(
        name=name,
        display_name=display_name or name,
        weight=weight,
        priority=priority,
        created_at=now,
        updated_at=now,
    )
    insert_unique(session, row, "tenant", name)
    audit.record(session, who, now, "tenant.create", "tenant", name, None, audit.as_dict(row))
    return row


def get(session: Session, name: str) -> TenantRow:
    return get_or_404(session, TenantRow, name, "tenant")


def list_page(
    session: Session, *, limit: int, cursor: str | None, active: bool | None = None
) -> Page[TenantRow]:
    def where(stmt):  # type: ignore[no-untyped-def]
        return stmt if active is None else stmt.where(TenantRow.active == active)

    return page_by_name(session, TenantRow, limit=limit, cursor=cursor, where=where)


def update(
    session: Session,
    who: Principal,
    now: datetime,
    name: str,
    *,
    display_name: str | None = None,
    weight: float | None = None,
    priority: int | None = None,
    active: bool | None = None,
) -> TenantRow:
    row = get(session, name)
    before = audit.as_dict(row)
    if display_name is not None:
        row.display_name = display_name
    if weight is not None:
        row.weight = weight
    if priority is not None:
        row.priority = priority
    deactivating = active is False and row.active
    if active is not None:
        row.active = active
    row.updated_at = now
    session.add(row)
    session.flush()
    if deactivating:
        _cancel_waiting(session, name, now)
    action = "tenant.deactivate" if deactivating else "tenant.update"
    audit.record(session, who, now, action, "tenant", name, before, audit.as_dict(row))
    return row


def _cancel_waiting(session: Session, tenant: str, now: datetime) -> None:
    """A deactivated tenant's waiting requests are cancelled; open reservations run to their end."""
    waiting = session.exec(
        select(RequestRow).where(
            RequestRow.tenant == tenant,
            col(RequestRow.state).in_(WAITING_VALUES),
        )
    ).all()
    from scheduler.services.requests import drop_planned_reservation

    for req in waiting:
        drop_planned_reservation(session, req)
        lifecycle.transition(
            session,
            req,
            RequestState.CANCELLED,
            now,
            reason_code="tenant_deactivated",
            message="The hub operator deactivated this tenant.",
        )
