"""The one place where a request's state changes.

:func:`transition` checks that the move is allowed, applies it with optimistic concurrency
(``UPDATE … WHERE id = :id AND version = :v``), stamps the times, and records the event in the
same transaction. A caller whose row changed meanwhile gets ``False`` and leaves the request
to the next cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Update, bindparam, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from scheduler.domain import TERMINAL_STATES, TRANSITIONS, RequestState
from scheduler.errors import InvalidState
from scheduler.tables import RequestEventRow, RequestRow


def _mirror(row: Any, changes: dict[str, Any]) -> None:
    """Copy a guarded write onto the caller's row. An ORM row is updated without being marked
    dirty (no second UPDATE); a plain row (the cycle reads plain column rows) is just set."""
    orm = hasattr(row, "_sa_instance_state")
    for key, value in [*changes.items(), ("version", row.version + 1)]:
        if orm:
            set_committed_value(row, key, value)
        else:
            setattr(row, key, value)


def _guarded_update(session: Session, row: Any, changes: dict[str, Any]) -> bool:
    """``UPDATE request SET … WHERE id = :id AND version = :v``; False if the row changed.

    The cycle runs this for every request it plans; the statement is built once per set of
    columns and runs on the session's connection (pending ORM changes are flushed first)."""
    session.flush()
    params = {f"b_{k}": v for k, v in changes.items()}
    params |= {"b_id": row.id, "b_old_version": row.version, "b_version": row.version + 1}
    result = session.connection().execute(_update_statement(tuple(sorted(changes))), params)
    return result.rowcount == 1


@lru_cache(maxsize=128)
def _update_statement(keys: tuple[str, ...]) -> Update:
    t = RequestRow.__table__  # type: ignore[attr-defined]
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.version == bindparam("b_old_version"))
        .values(
            {k: bindparam(f"b_{k}", type_=t.c[k].type) for k in keys}
            | {"version": bindparam("b_version")}
        )
    )


_BUFFER = "gpupool_event_buffer"


@contextmanager
def buffered_events(session: Session) -> Iterator[None]:
    """Collect the events recorded inside the block and insert them in one statement (the
    cycle records hundreds per apply)."""
    session.info[_BUFFER] = buffer = []
    try:
        yield
        if buffer:
            session.execute(insert(RequestEventRow.__table__), buffer)  # type: ignore[attr-defined]
    finally:
        session.info.pop(_BUFFER, None)


def record_event(
    session: Session,
    request_id: int,
    at: datetime,
    kind: str,
    message: str = "",
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    values = {
        "request_id": request_id,
        "at": at,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "message": message[:500],
        "data": data or {},
    }
    buffer = session.info.get(_BUFFER)
    if buffer is not None:
        buffer.append(values)
    else:
        session.add(RequestEventRow(**values))


def transition(
    session: Session,
    row: Any,
    to: RequestState,
    at: datetime,
    *,
    message: str = "",
    reason_code: str | None = None,
    values: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    strict: bool = True,
) -> bool:
    """Move ``row`` to state ``to`` at time ``at``; ``values`` sets other columns alongside.

    Returns ``False`` when the row's version changed since it was read (nothing written).
    An illegal move raises :class:`InvalidState` when ``strict``, else returns ``False``.
    """
    assert row.id is not None
    current = RequestState(row.state)
    if to not in TRANSITIONS[current]:
        if strict:
            raise InvalidState(f"request {row.id} is {current.value}; it cannot become {to.value}")
        return False
    changes: dict[str, Any] = dict(values or {})
    changes["state"] = to.value
    changes["updated_at"] = at
    changes["reason_code"] = reason_code
    changes["reason_message"] = message or None
    if to is RequestState.ACTIVE:
        changes.setdefault("started_at", at)
    if to in TERMINAL_STATES:
        changes.setdefault("ended_at", at)
    if to is RequestState.PENDING:
        changes.setdefault("planned_start", None)
        changes.setdefault("planned_end", None)
        changes.setdefault("started_at", None)
        changes.setdefault("ended_at", None)
    if not _guarded_update(session, row, changes):
        return False
    _mirror(row, changes)
    record_event(
        session,
        row.id,
        at,
        "state",
        message,
        from_state=current.value,
        to_state=to.value,
        data={"reason": reason_code, **(data or {})},
    )
    return True


def touch(
    session: Session,
    row: Any,
    at: datetime,
    values: dict[str, Any],
    *,
    event: str | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
    force: bool = False,
) -> bool:
    """Change columns other than ``state`` (reason, ETA) with the same optimistic guard;
    ``event`` records a request event of that kind alongside. ``False`` if the row is stale.

    Without changes nothing is written (and staleness goes unnoticed) unless ``force``: then
    the version is bumped anyway, which proves the row is still the one read."""
    assert row.id is not None
    if "state" in values:
        raise ValueError("use transition() to change a request's state")
    changes = {k: v for k, v in values.items() if getattr(row, k) != v}
    if not changes and not force:
        return True
    changes["updated_at"] = at
    if not _guarded_update(session, row, changes):
        return False
    _mirror(row, changes)
    if event:
        record_event(session, row.id, at, event, message, data=data)
    return True
