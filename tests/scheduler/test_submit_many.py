"""Submits written together (``services.submit.submit_many``, the API's write batch): each gets its
own stored request or its own refusal, a refusal writes nothing, the new rows go in with one
INSERT on PostgreSQL whatever their number, and two submits with one idempotency key in one
batch store one request, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlmodel import Session

from scheduler.domain import OPERATOR, Principal, Role
from scheduler.errors import GpupoolError, InvalidInput, InvalidState, NotFound
from scheduler.services import gpu_classes, nodes, tenants
from scheduler.services.submit import NewRequest, Submission, submit_many
from scheduler.settings import Settings

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _hub(engine) -> None:
    with Session(engine) as s:
        gpu_classes.create(s, OPERATOR, NOW, name="H100-80GB")
        gpu_classes.create(s, OPERATOR, NOW, name="A100-40GB")  # no nodes
        nodes.create(s, OPERATOR, NOW, name="n1", gpu_class="H100-80GB", gpus=8)
        for name, priority in (("acme", 3), ("zeta", 0), ("gone", 0)):
            tenants.create(s, OPERATOR, NOW, name=name, priority=priority)
        tenants.update(s, OPERATOR, NOW, "gone", active=False)
        s.commit()


def _tenant(name: str) -> Principal:
    return Principal(Role.TENANT, tenant=name, key_id=1)


def _ask(gpus: int = 1, gpu_class: str = "H100-80GB", name: str = "") -> NewRequest:
    return NewRequest(gpu_class, gpus, timedelta(hours=1), name=name)


def test_each_submission_gets_its_own_answer_and_the_new_rows_one_insert(engine):
    _hub(engine)
    inserts: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REQUEST "):
            inserts.append(1)

    batch = [
        Submission(_tenant("acme"), _ask(name="a1")),
        Submission(_tenant("nobody"), _ask()),  # unknown tenant
        Submission(_tenant("zeta"), _ask(gpu_class="B200")),  # unknown class
        Submission(_tenant("zeta"), _ask(gpu_class="A100-40GB")),  # a class without nodes
        Submission(_tenant("gone"), _ask()),  # deactivated tenant
        Submission(_tenant("zeta"), _ask(gpus=12)),  # 12 GPUs do not split into 8-GPU nodes
        Submission(OPERATOR, _ask(name="for-zeta"), tenant="zeta"),
        Submission(_tenant("acme"), _ask(gpus=16, name="a2")),
    ]
    event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(engine, expire_on_commit=False) as s:
            out = submit_many(s, NOW, Settings(), batch)
            s.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(out) == len(batch)
    assert isinstance(out[1], NotFound)
    assert isinstance(out[2], InvalidInput) and out[2].errors[0].field == "gpu_class"
    assert isinstance(out[3], InvalidInput) and "has no nodes" in str(out[3])
    assert isinstance(out[4], InvalidState)
    assert isinstance(out[5], InvalidInput) and out[5].errors[0].field == "gpus_per_node"
    stored = [r for r in out if not isinstance(r, GpupoolError)]
    assert [(r.row.tenant, r.row.name, r.row.gpus_per_node, r.row.priority) for r in stored] == [
        ("acme", "a1", 1, 3),
        ("zeta", "for-zeta", 1, 0),
        ("acme", "a2", 8, 3),
    ]
    # PostgreSQL: one multi-row INSERT. SQLite cannot say in which order a multi-row
    # INSERT returns its ids, so SQLAlchemy sends one per row there (no round trips to save).
    assert len(inserts) == (1 if engine.dialect.name == "postgresql" else len(stored))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, tenant, name FROM request ORDER BY id")).all()
        events = conn.execute(text("SELECT request_id, kind FROM request_event")).all()
    assert [(r.row.id, r.row.tenant, r.row.name) for r in stored] == [tuple(r) for r in rows]
    assert sorted(events) == sorted((r.row.id, "submitted") for r in stored)


def test_one_idempotency_key_twice_in_a_batch_stores_one_request(engine):
    _hub(engine)
    batch = [
        Submission(_tenant("acme"), _ask(name="x"), idempotency_key="k1"),
        Submission(_tenant("acme"), _ask(name="y")),
        Submission(_tenant("acme"), _ask(name="x"), idempotency_key="k1"),  # a retry
        Submission(_tenant("acme"), _ask(name="other"), idempotency_key="k1"),  # reused key
        Submission(_tenant("zeta"), _ask(name="x"), idempotency_key="k1"),  # another tenant's
    ]
    with Session(engine, expire_on_commit=False) as s:
        out = submit_many(s, NOW, Settings(), batch)
        s.commit()
    first, plain, retry, reused, zeta = out
    assert not isinstance(first, GpupoolError) and not first.replayed
    assert not isinstance(retry, GpupoolError) and retry.replayed
    assert retry.row.id == first.row.id
    assert isinstance(reused, InvalidInput) and reused.errors[0].field == "Idempotency-Key"
    assert not isinstance(zeta, GpupoolError) and zeta.row.id != first.row.id
    assert not isinstance(plain, GpupoolError)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM request")).scalar_one()
    assert n == 3
