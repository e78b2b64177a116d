"""GPU classes: the kinds of GPU in the pool (``H100-80GB``, …)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, func, select

from scheduler.domain import Principal
from scheduler.errors import InvalidState
from scheduler.pagination import Page
from scheduler.services import audit
from scheduler.services.common import get_or_404, insert_unique, page_by_name
from scheduler.tables import GpuClassRow, NodeRow, QuotaRow


def create(
    session: Session,
    who: Principal,
    now: datetime,
    *,
    name: str,
    description: str = "",
    memory_gib: int | None = None,
) -> GpuClassRow:
    row = GpuClassRow(name=name, description=description, memory_gib=memory_gib, created_at=now)
    insert_unique(session, row, "GPU class", name)
    audit.record(session, who, now, "gpu_class.create", "gpu_class", name, None, audit.as_dict(row))
    return row


def get(session: Session, name: str) -> GpuClassRow:
    return get_or_404(session, GpuClassRow, name, "GPU class")


def list_page(session: Session, *, limit: int, cursor: str | None) -> Page[GpuClassRow]:
    return page_by_name(session, GpuClassRow, limit=limit, cursor=cursor)


def update(
    session: Session,
    who: Principal,
    now: datetime,
    name: str,
    *,
    description: str | None = None,
    memory_gib: int | None = None,
) -> GpuClassRow:
    row = get(session, name)
    before = audit.as_dict(row)
    if description is not None:
        row.description = description
    if memory_gib is not None:
        row.memory_gib = memory_gib
    session.add(row)
    session.flush()
    audit.record(
        session, who, now, "gpu_class.update", "gpu_class", name, before, audit.as_dict(row)
    )
    return row


def delete(session: Session, who: Principal, now: datetime, name: str) -> None:
    row = get(session, name)
    nodes = session.exec(select(func.count()).where(NodeRow.gpu_class == name)).one()
    quotas = session.exec(select(func.count()).where(QuotaRow.gpu_class == name)).one()
    if nodes or quotas:
        raise InvalidState(
            f"GPU class {name!r} is used by {nodes} node(s) and {quotas} quota(s); "
            "remove them first"
        )
    before = audit.as_dict(row)
    session.delete(row)
    audit.record(session, who, now, "gpu_class.delete", "gpu_class", name, before, None)


def capacity(session: Session, name: str) -> int:
    """GPUs of the class installed in the pool (draining nodes included: draining is temporary)."""
    total = session.exec(select(func.sum(NodeRow.gpus)).where(NodeRow.gpu_class == name)).one()
    return int(total or 0)


def largest_node(session: Session, name: str) -> int:
    """GPUs of the largest node of the class (0 when it has none)."""
    most = session.exec(select(func.max(NodeRow.gpus)).where(NodeRow.gpu_class == name)).one()
    return int(most or 0)


def summary(session: Session) -> dict[str, tuple[int, int, int]]:
    """Per class: nodes, installed GPUs, and guaranteed quota promised."""
    out: dict[str, list[int]] = {}
    for cls, count, gpus in session.exec(
        select(NodeRow.gpu_class, func.count(), func.sum(NodeRow.gpus)).group_by(NodeRow.gpu_class)
    ).all():
        out.setdefault(cls, [0, 0, 0])[:2] = [int(count), int(gpus or 0)]
    for cls, guaranteed in session.exec(
        select(QuotaRow.gpu_class, func.sum(QuotaRow.guaranteed)).group_by(QuotaRow.gpu_class)
    ).all():
        out.setdefault(cls, [0, 0, 0])[2] = int(guaranteed or 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}
