"""``gpupool bench api``: the API under load, against a real server process on loopback.

Four phases, each on a fresh database: a mixed load (tenants submit, poll and cancel),
a submit burst (closed loop: submits only, as fast as the server takes them: its ceiling),
submits at a fixed rate (open loop: the latency a tenant sees at that rate), and a planning
run (many requests from many tenants on a large pool: how long after the last submit until
every request has been planned). Afterwards the database is checked: no acknowledged request
lost or duplicated, and no node or tenant limit over-committed at any moment.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.loadclient import Connection, LoadClientError
from api.loadtest import NO_ANSWER, LoadResult, OpStats, run_load
from api.process import ServerProcess, wait_for
from scheduler.db import make_engine

TOKEN = "bench-operator-token-0123456789"
OP = {"Authorization": f"Bearer {TOKEN}"}
GPU_CLASS = "H100-80GB"


@contextmanager
def fresh_database(kind: str, pg_admin_url: str, workdir: Path) -> Iterator[str]:
    """A new, empty database: an SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    admin = make_engine(pg_admin_url)
    name = f"gpupool_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def set_up_hub(base: str, gpus: int, tenants: int) -> dict[str, str]:
    """A pool of ``gpus`` GPUs (8-GPU nodes) and ``tenants`` tenants with keys."""
    with httpx.Client(base_url=base, headers=OP, timeout=30) as c:
        c.post("/v1/gpu-classes", json={"name": GPU_CLASS}).raise_for_status()
        for i in range(gpus // 8):
            body = {"name": f"node-{i:04d}", "gpu_class": GPU_CLASS, "gpus": 8}
            c.post("/v1/nodes", json=body).raise_for_status()
        keys = {}
        share = gpus // tenants
        for t in range(tenants):
            name = f"tenant-{t:02d}"
            c.post("/v1/tenants", json={"name": name}).raise_for_status()
            quota = {"guaranteed": share, "limit": gpus}
            c.put(f"/v1/tenants/{name}/quotas/{GPU_CLASS}", json=quota).raise_for_status()
            keys[name] = c.post(f"/v1/tenants/{name}/api-keys", json={}).json()["token"]
        return keys


def check_database(url: str, result: LoadResult) -> dict[str, Any]:
    """What the database says after a load: lost, duplicated, over-committed."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            stored: dict[int, str] = dict(
                conn.execute(text("SELECT id, tenant FROM request")).all()
            )
            names = conn.execute(
                text(
                    "SELECT tenant, name, count(*) FROM request "
                    "GROUP BY tenant, name HAVING count(*) > 1"
                )
            ).all()
            over = overcommitted(conn)
    finally:
        engine.dispose()
    lost = [rid for rid, tenant in result.acknowledged.items() if stored.get(rid) != tenant]
    return {"lost": len(lost), "duplicated": len(names), "overcommitted": over}


def overcommitted(conn: Any) -> list[str]:
    """Moments at which the reservations ever held (ended ones included, for the time they
    held GPUs) or planned exceed a node's GPUs or a tenant's limit."""
    nodes = dict(conn.execute(text("SELECT name, gpus FROM node")).all())
    limits = {
        (t, c): li
        for t, c, li in conn.execute(text('SELECT tenant, gpu_class, "limit" FROM quota')).all()
    }
    rows = conn.execute(
        text(
            "SELECT r.id, r.tenant, r.gpu_class, r.gpus, r.start, "
            'coalesce(r.ended_at, r.preempt_at, r."end"), n.node, n.gpus '
            "FROM reservation r JOIN reservation_node n ON n.reservation_id = r.id"
        )
    ).all()
    node_events: dict[str, list[tuple[Any, int]]] = {}
    tenant_events: dict[tuple[str, str], dict[int, tuple[Any, Any, int]]] = {}
    for rid, tenant, cls, gpus, start, end, node, node_gpus in rows:
        node_events.setdefault(node, []).extend([(start, node_gpus), (end, -node_gpus)])
        tenant_events.setdefault((tenant, cls), {})[rid] = (start, end, gpus)
    out = []
    for node, events in node_events.items():
        level = 0
        for _, d in sorted(events, key=lambda e: (str(e[0]), e[1])):
            level += d
            if level > nodes.get(node, 0):
                out.append(f"node {node}: {level} > {nodes.get(node, 0)}")
                break
    for key, ivs in tenant_events.items():
        events = [e for a, b, g in ivs.values() for e in ((a, g), (b, -g))]
        level = 0
        for _, d in sorted(events, key=lambda e: (str(e[0]), e[1])):
            level += d
            if level > limits.get(key, 0):
                out.append(f"tenant {key}: {level} > {limits.get(key, 0)}")
                break
    return out


async def _submit(
    conn: Connection,
    result: LoadResult,
    tenant: str,
    headers: dict[str, str],
    body: dict[str, Any],
    since: float | None = None,
) -> None:
    """One submit, timed from ``since`` (default: now) and recorded (NO_ANSWER: the
    connection failed or timed out)."""
    t0 = time.monotonic() if since is None else since
    try:
        r = await conn.post("/v1/requests", json=body, headers=headers)
    except LoadClientError as exc:
        result.ops["submit"].add(time.monotonic() - t0, NO_ANSWER)
        result.errors.append(str(exc))
        return
    result.ops["submit"].add(time.monotonic() - t0, r.status_code)
    if r.status_code == 201:
        result.acknowledged[r.json()["id"]] = tenant
        result.last_submit_at = time.monotonic()
    elif r.status_code >= 500:
        result.errors.append(f"submit -> {r.status_code}: {r.text[:200]}")


async def submit_burst(base: str, keys: dict[str, str], seconds: float) -> LoadResult:
    """Closed loop: every tenant submits back to back for ``seconds`` (the server's ceiling)."""
    result = LoadResult(0.0, {"submit": OpStats()}, {}, set(), [])
    start = time.monotonic()
    stop = start + seconds

    async def one(name: str, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        conn = Connection(base)
        n = 0
        try:
            while time.monotonic() < stop:
                n += 1
                body = {"gpu_class": GPU_CLASS, "gpus": 1, "duration": 3600, "name": f"{name}-b{n}"}
                await _submit(conn, result, name, headers, body)
        finally:
            await conn.close()

    await asyncio.gather(*(one(n, k) for n, k in keys.items()))
    result.duration_s = time.monotonic() - start
    return result


async def submit_rate(
    base: str, keys: dict[str, str], rate: float, seconds: float, warmup_s: float = 0.0
) -> LoadResult:
    """Open loop: submits arrive at ``rate`` per second, round-robin over the tenants, whether
    or not earlier ones have been answered. Latency counts from the moment a submit was due,
    so a server that falls behind shows it (no coordinated omission).

    Each tenant keeps its own connections, as separate clients would (a submit due while
    all of its tenant's are busy opens another), so the connections spread over the API
    processes. The first ``warmup_s`` seconds run at the same rate but their latencies are
    not recorded (connections opening, caches filling); their submits are still checked."""
    result = LoadResult(0.0, {"submit": OpStats()}, {}, set(), [])
    warm = LoadResult(0.0, {"submit": OpStats()}, {}, set(), [])
    names = sorted(keys)
    idle: dict[str, list[Connection]] = {name: [] for name in names}
    pending: set[asyncio.Task[None]] = set()
    begin = time.monotonic()
    start = begin + warmup_s
    total = int(rate * (warmup_s + seconds))

    async def one(i: int, due: float) -> None:
        name = names[i % len(names)]
        conn = idle[name].pop() if idle[name] else Connection(base)
        body = {"gpu_class": GPU_CLASS, "gpus": 1, "duration": 3600, "name": f"{name}-r{i}"}
        headers = {"Authorization": f"Bearer {keys[name]}"}
        # Timed from when it was due, not from when this client got round to sending it.
        await _submit(conn, result if due >= start else warm, name, headers, body, since=due)
        idle[name].append(conn)

    for i in range(total):
        due = begin + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    result.duration_s = time.monotonic() - start
    result.acknowledged |= warm.acknowledged
    result.errors += warm.errors
    await asyncio.gather(*(c.close() for conns in idle.values() for c in conns))
    return result


async def submit_many(base: str, keys: dict[str, str], total: int, seed: int) -> LoadResult:
    """``total`` requests spread over the tenants, sent as fast as the server takes them."""
    rng = random.Random(seed)
    result = LoadResult(0.0, {"submit": OpStats()}, {}, set(), [])
    names = sorted(keys)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    start = time.monotonic()

    async def worker(name: str) -> None:
        headers = {"Authorization": f"Bearer {keys[name]}"}
        conn = Connection(base, timeout=60)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                gpus = rng.choice([1, 1, 2, 4, 8, 8, 16, 32])
                body = {
                    "gpu_class": GPU_CLASS,
                    "gpus": gpus,
                    "duration": rng.choice([1800, 3600, 4 * 3600, 12 * 3600]),
                    "name": f"p{i}",
                }
                if gpus > 8:
                    body["gpus_per_node"] = 8
                await _submit(conn, result, name, headers, body)
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in names))
    result.duration_s = time.monotonic() - start
    return result


def _unplanned(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM request WHERE reason_code = 'not_planned_yet'")
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


def _states(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(
                conn.execute(text("SELECT state, count(*) FROM request GROUP BY state")).all()
            )
    finally:
        engine.dispose()


def run(
    *,
    backend: str,
    pg_admin_url: str,
    tenants: int,
    seconds: float,
    burst_seconds: float,
    gpus: int,
    rate: float = 0.0,
    rate_seconds: float = 20.0,
    rate_warmup_s: float = 0.0,
    workers: int = 1,
    plan_requests: int,
    plan_tenants: int,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": backend, "workers": workers}
    env = {"GPUPOOL_API_WORKERS": str(workers)}
    with TemporaryDirectory() as tmp:
        work = Path(tmp)
        logs = log_dir or work
        if seconds > 0:
            with (
                fresh_database(backend, pg_admin_url, work) as url,
                ServerProcess(url, TOKEN, logs / "mixed.log", **env) as server,
            ):
                keys = set_up_hub(server.url, gpus, tenants)
                result = asyncio.run(run_load(server.url, keys, seconds=seconds))
                out["mixed"] = result.summary() | check_database(url, result)
                out["mixed"]["errors"] = result.errors[:5]
        if burst_seconds > 0:
            with (
                fresh_database(backend, pg_admin_url, work) as url,
                ServerProcess(url, TOKEN, logs / "burst.log", **env) as server,
            ):
                keys = set_up_hub(server.url, gpus, tenants)
                result = asyncio.run(submit_burst(server.url, keys, burst_seconds))
                out["burst"] = result.summary() | check_database(url, result)
                out["burst"]["errors"] = result.errors[:5]
        if rate:
            with (
                fresh_database(backend, pg_admin_url, work) as url,
                ServerProcess(url, TOKEN, logs / "rate.log", **env) as server,
            ):
                keys = set_up_hub(server.url, gpus, tenants)
                result = asyncio.run(
                    submit_rate(server.url, keys, rate, rate_seconds, warmup_s=rate_warmup_s)
                )
                out["rate"] = (
                    result.summary()
                    | {"offered_per_s": rate, "warmup_s": rate_warmup_s}
                    | check_database(url, result)
                )
                out["rate"]["errors"] = result.errors[:5]
        if plan_requests:
            with (
                fresh_database(backend, pg_admin_url, work) as url,
                ServerProcess(url, TOKEN, logs / "plan.log", **env) as server,
            ):
                keys = set_up_hub(server.url, gpus, plan_tenants)
                result = asyncio.run(submit_many(server.url, keys, plan_requests, seed=1))
                last = result.last_submit_at
                wait_for(lambda: _unplanned(url) == 0, timeout=600, interval=0.5)
                planned_after = time.monotonic() - last
                out["plan"] = (
                    result.summary()
                    | {
                        "requests": plan_requests,
                        "tenants": plan_tenants,
                        "gpus": gpus,
                        "all_planned_after_last_submit_s": round(planned_after, 1),
                        "states": _states(url),
                    }
                    | check_database(url, result)
                )
    return out


def print_table(report: dict[str, Any]) -> None:
    print(f"backend: {report['backend']}, API processes: {report['workers']}")
    for phase in ("mixed", "burst", "rate", "plan"):
        if phase not in report:
            continue
        r = report[phase]
        sub = r.get("submit", {})
        line = (
            f"  {phase:<6} {r['throughput_rps']:>7.1f} req/s  "
            f"submits {sub.get('rate_per_s', 0):>6.1f}/s "
            f"p50 {sub.get('p50_ms', 0):>6.1f} ms  p99 {sub.get('p99_ms', 0):>7.1f} ms  "
            f"5xx {r['server_errors']}  no answer {r['unanswered']}  "
            f"lost {r['lost']}  dup {r['duplicated']}  "
            f"overcommit {len(r['overcommitted'])}"
        )
        if phase == "rate":
            line += f"  (offered {r['offered_per_s']:.0f}/s)"
        if phase == "plan":
            line += f"  all planned {r['all_planned_after_last_submit_s']} s after the last submit"
        print(line)


def main(**kw: Any) -> dict[str, Any]:
    report = run(**kw)
    print_table(report)
    return report
