"""The plan as operators see it: every reservation in a time range."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, select

from scheduler.services.requests import ReservationView
from scheduler.tables import ReservationNodeRow, ReservationRow


def reservations_between(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    gpu_class: str | None = None,
    tenant: str | None = None,
    node: str | None = None,
    limit: int = 10_000,
) -> list[ReservationView]:
    """Reservations (planned, open or ended) that overlap ``[start, end)``, by start time."""
    stmt = (
        select(ReservationRow)
        .where(col(ReservationRow.start) < end, col(ReservationRow.end) > start)
        .order_by(col(ReservationRow.start), col(ReservationRow.id))
        .limit(limit)
    )
    if gpu_class:
        stmt = stmt.where(ReservationRow.gpu_class == gpu_class)
    if tenant:
        stmt = stmt.where(ReservationRow.tenant == tenant)
    if node:
        stmt = stmt.where(
            col(ReservationRow.id).in_(
                select(ReservationNodeRow.reservation_id).where(ReservationNodeRow.node == node)
            )
        )
    rows = list(session.exec(stmt))
    allocations: dict[int, dict[str, int]] = defaultdict(dict)
    ids = [r.id for r in rows]
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for n in session.exec(
            select(ReservationNodeRow).where(col(ReservationNodeRow.reservation_id).in_(chunk))
        ):
            allocations[n.reservation_id][n.node] = n.gpus
    return [ReservationView(r, dict(sorted(allocations[r.id or 0].items()))) for r in rows]
