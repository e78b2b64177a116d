"""The one place where a request's state changes.

:func:`transition` checks that the move is allowed, applies it with optimistic concurrency
(``UPDATE … WHERE id = :id AND version = :v``), stamps the times, and records the event in the
same transaction. A caller whose row changed meanwhile gets ``False`` and leaves the request
to the next cycle. :func:`transition_change` and :func:`touch_change` only decide a write;
:func:`write_many` sends many of them at once, with the same guard (the cycle's apply).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Update, bindparam, insert, select, update
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


@dataclass(slots=True)
class Change:
    """One guarded write of a request row: the columns to set on it, and the event recorded
    with them. ``version`` is the row version the change was decided on."""

    request_id: int
    version: int
    at: datetime
    columns: dict[str, Any]
    event: dict[str, Any] | None = None


def _params(change: Change) -> dict[str, Any]:
    params = {f"b_{k}": v for k, v in change.columns.items()}
    return params | {
        "b_id": change.request_id,
        "b_old_version": change.version,
        "b_version": change.version + 1,
    }


def _record(session: Session, change: Change) -> None:
    if change.event is not None:
        record_event(session, change.request_id, change.at, **change.event)


def _write_one(session: Session, row: Any, change: Change) -> bool:
    """``UPDATE request SET … WHERE id = :id AND version = :v``; False if the row changed.

    The statement is built once per set of columns and runs on the session's connection
    (pending ORM changes are flushed first)."""
    session.flush()
    statement = _update_statement(tuple(sorted(change.columns)))
    if session.connection().execute(statement, _params(change)).rowcount != 1:
        return False
    _mirror(row, change.columns)
    _record(session, change)
    return True


def write_many(session: Session, changes: list[Change]) -> set[int]:
    """Write many changes at once; returns the ids of the requests written.

    The rows are locked first, in id order, and a change is kept only if its row is still
    at the version it was decided on; the kept ones go out as one executemany per set of
    columns (the cycle writes hundreds per apply: one statement each was most of the time it
    held the write lock). The callers' rows are not updated."""
    if not changes:
        return set()
    session.flush()
    conn = session.connection()
    ids = sorted(c.request_id for c in changes)
    current: dict[int, int] = {}
    for i in range(0, len(ids), 500):
        current.update(conn.execute(_LOCK_VERSIONS, {"ids": ids[i : i + 500]}).all())
    fresh = [c for c in changes if current.get(c.request_id) == c.version]
    groups: dict[tuple[str, ...], list[Change]] = {}
    for c in fresh:
        groups.setdefault(tuple(sorted(c.columns)), []).append(c)
    for keys, group in groups.items():
        result = conn.execute(_update_statement(keys), [_params(c) for c in group])
        if conn.dialect.supports_sane_multi_rowcount and result.rowcount not in (-1, len(group)):
            raise RuntimeError(f"{len(group)} locked requests, {result.rowcount} updated")
    for c in fresh:
        _record(session, c)
    return {c.request_id for c in fresh}


_request = RequestRow.__table__  # type: ignore[attr-defined]
_LOCK_VERSIONS = (
    select(_request.c.id, _request.c.version)
    .where(_request.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_request.c.id)
    .with_for_update()
)


@lru_cache(maxsize=128)
def _update_statement(keys: tuple[str, ...]) -> Update:
    t = _request
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.version == bindparam("b_old_version"))
        .values(
            {k: bindparam(f"b_{k}", type_=t.c[k].type) for k in keys}
            | {"version": bindparam("b_version")}
        )
    )


_BUFFER = "gpupool_event_buffer"


_INSERT_EVENT = insert(RequestEventRow.__table__)  # type: ignore[attr-defined]


@contextmanager
def buffered_events(session: Session) -> Iterator[None]:
    """Collect the events recorded inside the block and insert them in one statement (the
    cycle records hundreds per apply). Inside another such block, the outer one inserts."""
    if _BUFFER in session.info:
        yield
        return
    buffer: list[dict[str, Any]] = []
    session.info[_BUFFER] = buffer
    try:
        yield
        if buffer:
            # On the connection (Core): the ORM's bulk insert of one row took 25 us more,
            # spent inside the transaction (on SQLite, while every other writer waits).
            session.connection().execute(_INSERT_EVENT, buffer)
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
    values: dict[str, Any] = {
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


def transition_change(
    row: Any,
    to: RequestState,
    at: datetime,
    *,
    message: str = "",
    reason_code: str | None = None,
    values: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    strict: bool = True,
) -> Change | None:
    """The change that moves ``row`` to state ``to`` at ``at`` (``values`` sets other columns
    alongside), with its state event. An illegal move raises :class:`InvalidState` when
    ``strict``, else gives ``None``."""
    assert row.id is not None
    current = RequestState(row.state)
    if to not in TRANSITIONS[current]:
        if strict:
            raise InvalidState(f"request {row.id} is {current.value}; it cannot become {to.value}")
        return None
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
    event = {
        "kind": "state",
        "message": message,
        "from_state": current.value,
        "to_state": to.value,
        "data": {"reason": reason_code, **(data or {})},
    }
    return Change(row.id, row.version, at, changes, event)


def transition(session: Session, row: Any, to: RequestState, at: datetime, **kw: Any) -> bool:
    """Move ``row`` to state ``to`` at time ``at`` (see :func:`transition_change` for the
    keywords) and record the event.

    Returns ``False`` when the row's version changed since it was read (nothing written), or
    when the move is illegal and ``strict=False``.
    """
    change = transition_change(row, to, at, **kw)
    return change is not None and _write_one(session, row, change)


def touch_change(
    row: Any,
    at: datetime,
    values: dict[str, Any],
    *,
    event: str | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
    force: bool = False,
) -> Change | None:
    """The change of columns other than ``state`` (reason, ETA); ``event`` records a request
    event of that kind alongside. ``None`` when nothing changes, unless ``force``: then the
    version is bumped anyway, which proves the row is still the one read."""
    assert row.id is not None
    if "state" in values:
        raise ValueError("use transition() to change a request's state")
    changes = {k: v for k, v in values.items() if getattr(row, k) != v}
    if not changes and not force:
        return None
    changes["updated_at"] = at
    recorded = {"kind": event, "message": message, "data": data} if event else None
    return Change(row.id, row.version, at, changes, recorded)


def touch(session: Session, row: Any, at: datetime, values: dict[str, Any], **kw: Any) -> bool:
    """Apply :func:`touch_change` with the same optimistic guard as :func:`transition`;
    ``False`` if the row is stale (a change that writes nothing is never stale)."""
    change = touch_change(row, at, values, **kw)
    return change is None or _write_one(session, row, change)
