"""Submitting requests: the checks an ask must pass and the writes that store it.

The hot path of the API (see api/batch.py): :func:`submit_many` stores many submits in one
transaction with few statements; :func:`submit` is a batch of one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from scheduler import lifecycle
from scheduler.domain import Principal, RequestState
from scheduler.errors import GpupoolError, InvalidInput, InvalidState, NotFound
from scheduler.settings import Settings
from scheduler.tables import GpuClassRow, NodeRow, RequestRow, TenantRow


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A tenant's ask, as validated by the API schema (types and signs already checked)."""

    gpu_class: str
    gpus: int
    duration: timedelta
    gpus_per_node: int | None = None
    not_before: datetime | None = None
    deadline: datetime | None = None
    priority: int | None = None
    preemptible: bool = True
    requeue_on_preemption: bool = True
    name: str = ""

    def fingerprint(self, tenant: str) -> str:
        """A hash of what was asked, to tell a retry from a different request under one key."""
        payload: dict[str, Any] = {
            "tenant": tenant,
            "gpu_class": self.gpu_class,
            "gpus": self.gpus,
            "duration_s": self.duration.total_seconds(),
            "gpus_per_node": self.gpus_per_node,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "priority": self.priority,
            "preemptible": self.preemptible,
            "requeue_on_preemption": self.requeue_on_preemption,
            "name": self.name,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Submitted:
    """A stored request. A new one keeps the values it was inserted with and builds its row
    on first use: building a table row costs about 0.1 ms, which a caller can spend after
    its transaction (on SQLite, outside the write lock every other writer waits for)."""

    __slots__ = ("_row", "_values", "replayed")

    def __init__(
        self,
        row: RequestRow | None = None,
        *,
        values: dict[str, Any] | None = None,
        replayed: bool = False,
    ) -> None:
        if (row is None) == (values is None):
            raise ValueError("a Submitted needs either its row or its values")
        self._row, self._values, self.replayed = row, values, replayed

    @property
    def row(self) -> RequestRow:
        if self._row is None:
            self._row = RequestRow(**(self._values or {}))
        return self._row

    @property
    def columns(self) -> Any:
        """Its columns as attributes, as on its row, without building the row for a new one
        (the columns a submit leaves out are all NULL)."""
        return self._row if self._row is not None else _Columns(self._values or {})


class _Columns:
    """A new request's inserted values read as a row's attributes."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name in RequestRow.model_fields:
            return None
        raise AttributeError(name)


def _tenant_for(who: Principal, tenant: str | None) -> str:
    if who.is_operator:
        if not tenant:
            raise InvalidInput.field("tenant", "is required when the operator submits")
        return tenant
    assert who.tenant is not None
    if tenant and tenant != who.tenant:
        raise InvalidInput.field("tenant", "a tenant key submits for its own tenant only")
    return who.tenant


def _check_shape(ask: NewRequest, largest: int | None, settings: Settings, now: datetime) -> int:
    """Validate the ask against the pool, whose largest node of the class has ``largest``
    GPUs (0: the class has no nodes; None: there is no such class); returns the gang's GPUs
    per node."""
    if largest is None:
        raise InvalidInput.field("gpu_class", f"unknown GPU class {ask.gpu_class!r}")
    if largest == 0:
        raise InvalidInput.field("gpu_class", f"GPU class {ask.gpu_class!r} has no nodes")
    per_node = ask.gpus_per_node
    if per_node is None:
        if ask.gpus <= largest:
            per_node = ask.gpus
        elif ask.gpus % largest == 0:
            per_node = largest
        else:
            raise InvalidInput.field(
                "gpus_per_node",
                f"is required: {ask.gpus} GPUs do not fit one node (largest has {largest}) "
                f"and are not a multiple of {largest}",
            )
    if per_node > largest:
        raise InvalidInput.field(
            "gpus_per_node",
            f"{per_node} is more than any {ask.gpu_class} node has (largest: {largest})",
        )
    if ask.gpus % per_node:
        raise InvalidInput.field(
            "gpus", f"{ask.gpus} is not a multiple of gpus_per_node ({per_node})"
        )
    seconds = ask.duration.total_seconds()
    if seconds <= 0:
        raise InvalidInput.field("duration", "must be positive")
    if seconds != int(seconds):
        raise InvalidInput.field("duration", "must be whole seconds")
    if seconds > settings.max_duration_s:
        raise InvalidInput.field(
            "duration", f"must be at most {settings.max_duration_s} s ({seconds:.0f} s asked)"
        )
    earliest = max(now, ask.not_before) if ask.not_before else now
    if ask.deadline is not None and ask.deadline < earliest + ask.duration:
        raise InvalidInput.field(
            "deadline",
            f"is earlier than {'not_before' if ask.not_before else 'now'} + duration "
            f"({(earliest + ask.duration).isoformat()})",
        )
    return per_node


@dataclass(frozen=True, slots=True)
class Submission:
    """One submit: who asks, what, for which tenant (the operator names one), and the
    retry key it came with."""

    who: Principal
    ask: NewRequest
    tenant: str | None = None
    idempotency_key: str | None = None


def submit(
    session: Session,
    who: Principal,
    now: datetime,
    settings: Settings,
    ask: NewRequest,
    *,
    tenant: str | None = None,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store a new pending request; a retry with the same ``idempotency_key`` returns the first."""
    (result,) = submit_many(session, now, settings, [Submission(who, ask, tenant, idempotency_key)])
    if isinstance(result, GpupoolError):
        raise result
    return result


def submit_many(
    session: Session, now: datetime, settings: Settings, submissions: Sequence[Submission]
) -> list[Submitted | GpupoolError]:
    """:func:`submit` for several requests in one transaction: each one's stored request, or
    the error that refused it (a refused one writes nothing).

    The hot path of the API (see api/batch.py): whatever the number of submissions, the
    facts they are checked against are read in one statement, the new rows go in with one
    INSERT and their events with one more (a submission with an idempotency key is looked
    up and inserted on its own). SQLite cannot say in which order a multi-row INSERT returns
    its ids, so there SQLAlchemy inserts the rows one by one: no round trips to save. The
    statements are built once, at module level, and run on the session's connection,
    without the ORM's unit of work.
    """
    out: list[Submitted | GpupoolError | None] = [None] * len(submissions)
    names: dict[int, str] = {}
    for i, sub in enumerate(submissions):
        try:
            names[i] = _tenant_for(sub.who, sub.tenant)
        except GpupoolError as exc:
            out[i] = exc
    conn = session.connection()
    tenants_found, largest_by_class = _facts(
        conn, set(names.values()), {submissions[i].ask.gpu_class for i in names}
    )
    fresh: list[tuple[int, dict[str, Any]]] = []
    with lifecycle.buffered_events(session):  # one INSERT for all their events
        for i, name in names.items():
            sub = submissions[i]
            try:
                found = tenants_found.get(name)
                if found is None:
                    raise NotFound(f"tenant {name!r} does not exist")
                active, tenant_priority = found
                if not active:
                    raise InvalidState(f"tenant {name!r} is deactivated")
                fingerprint = sub.ask.fingerprint(name)
                if sub.idempotency_key is not None:
                    earlier = _by_idempotency_key(session, name, sub.idempotency_key)
                    if earlier is not None:
                        out[i] = _replay(earlier, fingerprint)
                        continue
                largest = largest_by_class.get(sub.ask.gpu_class)
                per_node = _check_shape(sub.ask, largest, settings, now)
                values = _values(sub, name, tenant_priority, per_node, fingerprint, now)
                if sub.idempotency_key is None:
                    fresh.append((i, values))
                    continue
                try:
                    with session.begin_nested():  # the SAVEPOINT is taken with the connection
                        new_id = session.connection().execute(_INSERT_REQUEST, values).scalar_one()
                except IntegrityError:
                    # Another submit with the same key won the race: answer as its retry.
                    earlier = _by_idempotency_key(session, name, sub.idempotency_key)
                    if earlier is None:
                        raise
                    out[i] = _replay(earlier, fingerprint)
                    continue
                out[i] = _stored(session, sub.who, values | {"id": new_id}, now)
            except GpupoolError as exc:
                out[i] = exc
        if fresh:
            rows = conn.execute(_INSERT_REQUESTS, [values for _, values in fresh]).all()
            for (i, values), row in zip(fresh, rows, strict=True):
                out[i] = _stored(session, submissions[i].who, values | {"id": row[0]}, now)
    return [r for r in out if r is not None]


def _values(
    sub: Submission, tenant: str, priority: int, per_node: int, fingerprint: str, now: datetime
) -> dict[str, Any]:
    """The new row's columns (``priority``: the tenant's, unless the ask names one)."""
    ask = sub.ask
    return {
        "tenant": tenant,
        "name": ask.name,
        "gpu_class": ask.gpu_class,
        "gpus": ask.gpus,
        "gpus_per_node": per_node,
        "duration_s": int(ask.duration.total_seconds()),
        "not_before": ask.not_before,
        "deadline": ask.deadline,
        "priority": priority if ask.priority is None else ask.priority,
        "preemptible": ask.preemptible,
        "requeue_on_preemption": ask.requeue_on_preemption,
        "state": RequestState.PENDING.value,
        "reason_code": "not_planned_yet",
        "reason_message": "Submitted; the next scheduling cycle will plan it.",
        "submitted_at": now,
        "updated_at": now,
        "idempotency_key": sub.idempotency_key,
        "request_hash": fingerprint,
        "version": 1,
    }


def _stored(session: Session, who: Principal, values: dict[str, Any], now: datetime) -> Submitted:
    lifecycle.record_event(
        session, values["id"], now, "submitted", f"{who.actor} submitted", to_state=values["state"]
    )
    return Submitted(values=values)


def _facts(
    conn: Connection, tenants: set[str], classes: set[str]
) -> tuple[dict[str, tuple[bool, int]], dict[str, int]]:
    """In one statement: (active, priority) of each tenant that exists, and the GPUs of the
    largest node of each GPU class that exists (0 if it has no nodes)."""
    if not tenants:
        return {}, {}
    tenants_found: dict[str, tuple[bool, int]] = {}
    largest: dict[str, int] = {}
    params = {"tenants": sorted(tenants), "classes": sorted(classes)}
    for name, active, priority, gpu_class, most in conn.execute(_FACTS, params):
        tenants_found[name] = (active, priority)
        if gpu_class is not None:
            largest[gpu_class] = int(most or 0)
    return tenants_found, largest


_request = RequestRow.__table__  # type: ignore[attr-defined]
_node = NodeRow.__table__  # type: ignore[attr-defined]
_gpu_class = GpuClassRow.__table__  # type: ignore[attr-defined]
_tenant = TenantRow.__table__  # type: ignore[attr-defined]
#: What submits check, in one round trip: each named tenant that exists (one row at least,
#: whatever the classes), joined to each named GPU class that exists and its largest node
#: (NULL when it has none).
_FACTS = (
    sa_select(
        _tenant.c.name,
        _tenant.c.active,
        _tenant.c.priority,
        _gpu_class.c.name,
        sa_select(func.max(_node.c.gpus))
        .where(_node.c.gpu_class == _gpu_class.c.name)
        .scalar_subquery()
        .label("largest"),
    )
    .select_from(
        _tenant.outerjoin(_gpu_class, _gpu_class.c.name.in_(bindparam("classes", expanding=True)))
    )
    .where(_tenant.c.name.in_(bindparam("tenants", expanding=True)))
)
_INSERT_REQUEST = insert(_request).returning(_request.c.id)
#: Many rows in one statement (PostgreSQL), their ids returned in the order of the rows.
_INSERT_REQUESTS = insert(_request).returning(_request.c.id, sort_by_parameter_order=True)


def _by_idempotency_key(session: Session, tenant: str, key: str) -> RequestRow | None:
    return session.exec(
        select(RequestRow).where(RequestRow.tenant == tenant, RequestRow.idempotency_key == key)
    ).first()


def _replay(earlier: RequestRow, fingerprint: str) -> Submitted:
    if earlier.request_hash != fingerprint:
        raise InvalidInput.field("Idempotency-Key", "was already used for a different request")
    return Submitted(earlier, replayed=True)
