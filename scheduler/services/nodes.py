"""Nodes: machines with GPUs of one class. The static inventory is managed here by operators;
the Kubernetes controller keeps nodes with ``source='kubernetes'`` in step with the cluster."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, func, select

from scheduler.domain import Principal, ReservationState
from scheduler.errors import InvalidInput, InvalidState
from scheduler.pagination import Page
from scheduler.services import audit
from scheduler.services.common import get_or_404, insert_unique, page_by_name
from scheduler.tables import GpuClassRow, NodeRow, ReservationNodeRow, ReservationRow


def _require_class(session: Session, name: str) -> None:
    if session.get(GpuClassRow, name) is None:
        raise InvalidInput.field("gpu_class", f"unknown GPU class {name!r}")


def active_gpus_on(session: Session, node: str) -> int:
    """GPUs held on ``node`` by reservations whose window is open."""
    total = session.exec(
        select(func.sum(ReservationNodeRow.gpus))
        .join(ReservationRow, col(ReservationRow.id) == col(ReservationNodeRow.reservation_id))
        .where(
            ReservationNodeRow.node == node,
            ReservationRow.state == ReservationState.ACTIVE.value,
        )
    ).one()
    return int(total or 0)


def create(
    session: Session,
    who: Principal,
    now: datetime,
    *,
    name: str,
    gpu_class: str,
    gpus: int,
    source: str = "static",
) -> NodeRow:
    _require_class(session, gpu_class)
    row = NodeRow(
        name=name, gpu_class=gpu_class, gpus=gpus, source=source, created_at=now, updated_at=now
    )
    insert_unique(session, row, "node", name)
    audit.record(session, who, now, "node.create", "node", name, None, audit.as_dict(row))
    return row


def get(session: Session, name: str) -> NodeRow:
    return get_or_404(session, NodeRow, name, "node")


def list_page(
    session: Session, *, limit: int, cursor: str | None, gpu_class: str | None = None
) -> Page[NodeRow]:
    def where(stmt):  # type: ignore[no-untyped-def]
        return stmt.where(NodeRow.gpu_class == gpu_class) if gpu_class else stmt

    return page_by_name(session, NodeRow, limit=limit, cursor=cursor, where=where)


def update(
    session: Session,
    who: Principal,
    now: datetime,
    name: str,
    *,
    gpus: int | None = None,
    gpu_class: str | None = None,
) -> NodeRow:
    row = get(session, name)
    before = audit.as_dict(row)
    held = active_gpus_on(session, name)
    if gpus is not None and gpus != row.gpus:
        if gpus < held:
            raise InvalidState(
                f"node {name!r} has {held} GPUs in open reservations; drain it and wait for "
                f"them to end before lowering gpus to {gpus}"
            )
        row.gpus = gpus
    if gpu_class is not None and gpu_class != row.gpu_class:
        _require_class(session, gpu_class)
        if held:
            raise InvalidState(f"node {name!r} has open reservations; drain it first")
        row.gpu_class = gpu_class
    row.updated_at = now
    session.add(row)
    session.flush()
    audit.record(session, who, now, "node.update", "node", name, before, audit.as_dict(row))
    return row


def set_drained(
    session: Session, who: Principal, now: datetime, name: str, drained: bool
) -> NodeRow:
    """Drain: no new reservations on the node; open ones run to their end. Undrain reverses."""
    row = get(session, name)
    if row.drained == drained:
        return row
    before = audit.as_dict(row)
    row.drained = drained
    row.updated_at = now
    session.add(row)
    session.flush()
    action = "node.drain" if drained else "node.undrain"
    audit.record(session, who, now, action, "node", name, before, audit.as_dict(row))
    return row


def delete(session: Session, who: Principal, now: datetime, name: str) -> None:
    row = get(session, name)
    held = active_gpus_on(session, name)
    if held:
        raise InvalidState(f"node {name!r} has {held} GPUs in open reservations; drain it first")
    before = audit.as_dict(row)
    session.delete(row)
    audit.record(session, who, now, "node.delete", "node", name, before, None)
