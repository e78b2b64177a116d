"""The audit log: who changed what, with the object before and after."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from scheduler.domain import Principal
from scheduler.pagination import Page, decode_int_cursor, encode_cursor
from scheduler.tables import AuditRow

#: Columns never copied into the audit log.
_SECRET_COLUMNS = frozenset({"secret_hash"})


def as_dict(row: SQLModel | None) -> dict[str, Any] | None:
    """A JSON-safe copy of a row's columns for the audit log (secrets left out)."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for key, value in row.model_dump().items():
        if key in _SECRET_COLUMNS:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime | date) else value
    return out


def record(
    session: Session,
    who: Principal,
    at: datetime,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    session.add(
        AuditRow(
            at=at,
            actor=who.actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before,
            after=after,
        )
    )


def list_entries(
    session: Session,
    *,
    limit: int,
    cursor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    action: str | None = None,
) -> Page[AuditRow]:
    """Newest first."""
    stmt = select(AuditRow).order_by(col(AuditRow.id).desc()).limit(limit + 1)
    if cursor:
        stmt = stmt.where(col(AuditRow.id) < decode_int_cursor(cursor))
    if object_type:
        stmt = stmt.where(AuditRow.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditRow.object_id == object_id)
    if action:
        stmt = stmt.where(AuditRow.action == action)
    rows = list(session.exec(stmt))
    next_cursor = encode_cursor(str(rows[limit - 1].id)) if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)
