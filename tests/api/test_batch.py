"""The write batch (api/batch.py): writes queued together share one transaction, each is
answered after the commit that made it durable, a refusal or a failing write fails only
its own item, and API keys are looked up once per batch, on both databases."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api.batch import Credential, WriteBatcher
from api.limits import RateLimiter
from scheduler.domain import OPERATOR, Principal
from scheduler.errors import GpupoolError, NotFound, RateLimited, Unauthorized
from scheduler.services import api_keys, tenants
from scheduler.tables import GpuClassRow

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _each(session: Session, items: list[tuple[Principal, Any]]) -> list[Any]:
    """A ``write_many`` whose payloads are work functions, run one after the other."""
    out: list[Any] = []
    for who, work in items:
        try:
            out.append(work(session, who))
        except GpupoolError as exc:
            out.append(exc)
    return out


def _add_class(name: str, seen: list[Any] | None = None):
    """Work that stores a GPU class ``name`` (noting its session and caller in ``seen``)."""

    def work(session: Session, who: Principal) -> str:
        if seen is not None:
            seen.append((id(session), who))
        session.add(GpuClassRow(name=name, created_at=NOW))
        session.flush()
        return name

    return work


def _refuse(session: Session, who: Principal) -> str:
    raise NotFound("no such thing")


def _classes(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(GpuClassRow.name)).scalars())  # type: ignore[call-overload]


def _hold(until: threading.Event, holding: threading.Event):
    """Work that keeps the batch thread (and its transaction) busy until ``until`` is set."""

    def work(session: Session, who: Principal) -> str:
        holding.set()
        until.wait(30)
        return "held"

    return work


async def _queued_behind_a_held_batch(batcher: WriteBatcher, items: list[tuple[Credential, Any]]):
    """Hold the batch thread in one transaction, queue ``items`` meanwhile, then let go: the
    items are written together. Returns their outcomes (result or exception), in order."""
    until, holding = threading.Event(), threading.Event()
    first = asyncio.ensure_future(
        batcher.run(Credential("op", OPERATOR), _each, _hold(until, holding))
    )
    while not holding.is_set():
        await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(batcher.run(c, _each, w)) for c, w in items]
    while batcher.queued < len(items):
        await asyncio.sleep(0.01)
    until.set()
    assert await first == "held"
    return await asyncio.gather(*rest, return_exceptions=True)


def test_writes_queued_together_share_one_transaction(engine):
    batcher = WriteBatcher(engine)
    seen: list[Any] = []
    items = [(Credential("op", OPERATOR), _add_class(f"class-{i}", seen)) for i in range(5)]
    try:
        outcomes = asyncio.run(_queued_behind_a_held_batch(batcher, items))
    finally:
        batcher.stop()
    assert outcomes == [f"class-{i}" for i in range(5)]
    assert len({session for session, _ in seen}) == 1
    assert _classes(engine) == {f"class-{i}" for i in range(5)}


def test_a_refusal_fails_only_its_own_item(engine):
    batcher = WriteBatcher(engine)
    op = Credential("op", OPERATOR)
    items = [(op, _add_class("A")), (op, _refuse), (op, _add_class("B"))]
    try:
        outcomes = asyncio.run(_queued_behind_a_held_batch(batcher, items))
    finally:
        batcher.stop()
    assert outcomes[0] == "A" and outcomes[2] == "B"
    assert isinstance(outcomes[1], NotFound)
    assert _classes(engine) == {"A", "B"}


def test_a_failing_write_fails_alone_and_the_others_are_written_again(engine):
    """The second "A" breaks the shared transaction (a unique name): it is rolled back as a
    whole and its items are written one per transaction, so only the duplicate fails."""
    batcher = WriteBatcher(engine)
    commits: list[object] = []

    def committed(conn: Any) -> None:
        commits.append(conn)

    event.listen(engine, "commit", committed)
    op = Credential("op", OPERATOR)
    items = [(op, _add_class("A")), (op, _add_class("B")), (op, _add_class("A"))]
    try:
        outcomes = asyncio.run(_queued_behind_a_held_batch(batcher, items))
    finally:
        batcher.stop()
        event.remove(engine, "commit", committed)
    assert outcomes[:2] == ["A", "B"]
    assert len(commits) == 2  # "A" and "B" alone (the held batch wrote nothing)
    assert isinstance(outcomes[2], IntegrityError)
    assert _classes(engine) == {"A", "B"}


def test_keys_are_looked_up_once_per_batch_and_each_caller_hears_about_its_own(engine):
    with Session(engine) as s:
        for name in ("acme", "zeta"):
            tenants.create(s, OPERATOR, NOW, name=name)
        acme = api_keys.issue(s, OPERATOR, NOW, "acme")
        zeta = api_keys.issue(s, OPERATOR, NOW, "zeta")
        revoked = api_keys.issue(s, OPERATOR, NOW, "zeta")
        s.commit()
        api_keys.revoke(s, OPERATOR, NOW, "zeta", revoked.row.id or 0)
        s.commit()
    lookups: list[str] = []

    def count(conn, cursor, statement, *args: Any) -> None:
        if "FROM api_key" in statement:
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    seen: list[Any] = []
    batcher = WriteBatcher(engine)
    items = [
        (Credential(acme.token), _add_class("A", seen)),
        (Credential(zeta.token), _add_class("Z", seen)),
        (Credential(revoked.token), _add_class("R", seen)),
        (Credential("gpk_nosuch_key"), _add_class("N", seen)),
        (Credential(acme.token), _add_class("A2", seen)),
    ]
    try:
        outcomes = asyncio.run(_queued_behind_a_held_batch(batcher, items))
    finally:
        batcher.stop()
        event.remove(engine, "before_cursor_execute", count)
    assert outcomes[0] == "A" and outcomes[1] == "Z" and outcomes[4] == "A2"
    assert isinstance(outcomes[2], Unauthorized) and "revoked" in str(outcomes[2])
    assert isinstance(outcomes[3], Unauthorized) and "unknown" in str(outcomes[3])
    assert [who.tenant for _, who in seen] == ["acme", "zeta", "acme"]
    assert len(lookups) == 1
    assert _classes(engine) == {"A", "Z", "A2"}
    assert acme.token not in repr(items[0][0])  # a queued credential never shows its secret


def test_the_rate_limit_refuses_the_items_over_it(engine):
    with Session(engine) as s:
        tenants.create(s, OPERATOR, NOW, name="acme")
        key = api_keys.issue(s, OPERATOR, NOW, "acme")
        s.commit()
    batcher = WriteBatcher(engine, RateLimiter(rate=1, burst=2, clock=lambda: 100.0))
    items = [(Credential(key.token), _add_class(f"c{i}")) for i in range(3)]
    try:
        outcomes = asyncio.run(_queued_behind_a_held_batch(batcher, items))
    finally:
        batcher.stop()
    assert outcomes[:2] == ["c0", "c1"]
    assert isinstance(outcomes[2], RateLimited)
    assert _classes(engine) == {"c0", "c1"}


def test_the_thread_ends_when_idle_and_the_next_write_starts_another(engine):
    batcher = WriteBatcher(engine, idle_exit_s=0.05)
    op = Credential("op", OPERATOR)

    async def main() -> list[str]:
        first = await batcher.run(op, _each, _add_class("A"))
        for _ in range(200):
            if not batcher.running:
                break
            await asyncio.sleep(0.01)
        assert not batcher.running
        return [first, await batcher.run(op, _each, _add_class("B"))]

    try:
        assert asyncio.run(main()) == ["A", "B"]
    finally:
        batcher.stop()
    assert _classes(engine) == {"A", "B"}


def test_a_caller_that_goes_away_does_not_stop_the_write(engine):
    batcher = WriteBatcher(engine)
    op = Credential("op", OPERATOR)

    async def main() -> None:
        until, holding = threading.Event(), threading.Event()
        first = asyncio.ensure_future(batcher.run(op, _each, _hold(until, holding)))
        while not holding.is_set():
            await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.run(op, _each, _add_class("A")))
        while batcher.queued < 1:
            await asyncio.sleep(0.01)
        gone.cancel()  # the client disconnected
        until.set()
        await first
        assert await batcher.run(op, _each, _add_class("B")) == "B"  # the thread is still serving

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert _classes(engine) == {"A", "B"}


@pytest.mark.parametrize("n", [1, 40])
def test_concurrent_submits_over_http_each_get_their_own_request(op, n):
    """Through the real endpoint: ``n`` submits at once from two tenants are each answered
    with their own stored request."""
    op.post("/v1/gpu-classes", json={"name": "H100-80GB"}).raise_for_status()
    op.post(
        "/v1/nodes", json={"name": "n1", "gpu_class": "H100-80GB", "gpus": 8}
    ).raise_for_status()
    keys = {}
    for t in ("acme", "zeta"):
        op.post("/v1/tenants", json={"name": t}).raise_for_status()
        keys[t] = op.post(f"/v1/tenants/{t}/api-keys", json={}).json()["token"]

    def one(i: int) -> tuple[str, Any]:
        tenant = ("acme", "zeta")[i % 2]
        body = {"gpu_class": "H100-80GB", "gpus": 1, "duration": 3600, "name": f"job-{i}"}
        r = op.post("/v1/requests", json=body, headers={"Authorization": f"Bearer {keys[tenant]}"})
        return tenant, r

    threads_out: list[tuple[str, Any]] = []
    threads = [threading.Thread(target=lambda i=i: threads_out.append(one(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(threads_out) == n
    ids = set()
    for tenant, r in threads_out:
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["tenant"] == tenant and body["name"].startswith("job-")
        assert r.headers["location"] == f"/v1/requests/{body['id']}"
        ids.add(body["id"])
    assert len(ids) == n
    with op.app.state.ctx.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar_one() == n
