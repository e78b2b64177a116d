"""Helpers shared by the service modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from scheduler.errors import AlreadyExists, NotFound
from scheduler.pagination import Page, decode_cursor, encode_cursor

R = TypeVar("R", bound=SQLModel)


def get_or_404(session: Session, model: type[R], key: Any, what: str) -> R:
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"{what} {key!r} does not exist")
    return row


def insert_unique(session: Session, row: R, what: str, name: str) -> R:
    """Add ``row``; a duplicate primary or unique key becomes :class:`AlreadyExists`."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:
        raise AlreadyExists(f"{what} {name!r} already exists") from exc
    return row


def page_by_name(
    session: Session,
    model: type[R],
    *,
    limit: int,
    cursor: str | None,
    where: Callable[[Any], Any] | None = None,
) -> Page[R]:
    """A page of ``model`` rows ordered by their ``name`` key."""
    name_col = col(model.name)  # type: ignore[attr-defined]
    stmt = select(model).order_by(name_col).limit(limit + 1)
    if cursor:
        stmt = stmt.where(name_col > decode_cursor(cursor))
    if where is not None:
        stmt = where(stmt)
    rows = list(session.exec(stmt))
    next_cursor = encode_cursor(rows[limit - 1].name) if len(rows) > limit else None  # type: ignore[attr-defined]
    return Page(rows[:limit], next_cursor)
