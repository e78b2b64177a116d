"""``gpupool bench usage``: how fast the server takes usage samples, and what they cost to keep.

A synthetic hub (8-GPU nodes, mostly reserved whole, some shared by two reservations, some
free) is built through the API; then every node's agent pushes a sampling pass every
``--interval`` seconds through ``POST /v1/usage/samples`` (the FastAPI app in-process: JSON
parsing, validation, attribution, buckets and idle tracking, on the real database). Printed:
samples per second against what the pool needs, push latency, rows kept, report latency.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from scheduler.cli import Cli

TOKEN = "bench-operator-token-0123456789"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
GPUS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    samples: int
    pushes: int
    seconds: float
    latencies_ms: list[float]

    def line(self, needed_per_s: float) -> str:
        rate = self.samples / self.seconds
        lat = sorted(self.latencies_ms)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (
            f"{self.name:<28} {rate:>9,.0f} samples/s  ({self.pushes} pushes of "
            f"{self.samples // self.pushes} samples: p50 {statistics.median(lat):.1f} ms, "
            f"p99 {p99:.1f} ms; {rate / needed_per_s:,.1f}x what the pool needs)"
        )


def _ok(response: Any, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def _build_hub(c: TestClient, nodes: int, rng: random.Random) -> dict[str, list[tuple[int, str]]]:
    """Nodes, tenants and reservations; returns, per node, each GPU's (request id, tenant) or
    (0, "") for a free GPU."""
    _ok(c.post("/v1/gpu-classes", json={"name": "H100-80GB"}), 201)
    for i in range(nodes):
        body = {"name": f"node-{i:04d}", "gpu_class": "H100-80GB", "gpus": GPUS_PER_NODE}
        _ok(c.post("/v1/nodes", json=body), 201)
    tenants = [f"startup-{i:02d}" for i in range(10)]
    capacity = nodes * GPUS_PER_NODE
    for t in tenants:
        _ok(c.post("/v1/tenants", json={"name": t}), 201)
        quota = {"guaranteed": capacity // len(tenants), "limit": capacity}
        _ok(c.put(f"/v1/tenants/{t}/quotas/H100-80GB", json=quota))
    # 3 of 4 nodes taken whole, 1 of 8 shared by two 4-GPU reservations, the rest free.
    for i in range(nodes):
        sizes = [8] if i % 8 < 6 else [4, 4] if i % 8 == 6 else []
        for size in sizes:
            ask = {"gpu_class": "H100-80GB", "gpus": size, "duration": 86400}
            _ok(c.post("/v1/requests", json={**ask, "tenant": rng.choice(tenants)}), 201)
    c.app.state.ctx.runner.run_once()  # type: ignore[attr-defined]
    plan = _ok(c.get("/v1/plan", params={"start": START.isoformat()}))
    owners: dict[str, list[tuple[int, str]]] = {
        f"node-{i:04d}": [(0, "")] * GPUS_PER_NODE for i in range(nodes)
    }
    for r in plan["reservations"]:
        for share in r["allocation"]:
            gpus = owners[share["node"]]
            free = [g for g, (rid, _) in enumerate(gpus) if rid == 0][: share["gpus"]]
            for g in free:
                gpus[g] = (r["request_id"], r["tenant"])
    return owners


def _pass(
    node: str, owners: list[tuple[int, str]], ts: datetime, rng: random.Random
) -> list[dict[str, Any]]:
    out = []
    for g, (rid, tenant) in enumerate(owners):
        pods = []
        if rid:
            pods = [
                {
                    "namespace": tenant,
                    "pod": f"job-{rid}-{g}",
                    "container": "main",
                    "pod_uid": f"uid-{rid}-{g}",
                    "request_id": rid,
                    "used_mib": 40_000,
                }
            ]
        out.append(
            {
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "gpu_uuid": f"GPU-{node}-{g}",
                "gpu_index": g,
                "model": "NVIDIA H100 80GB HBM3",
                "mig_instance": None,
                "util_pct": round(rng.uniform(20, 100), 1) if rid else 0.0,
                "fb_used_mib": 40_000 if rid else 0,
                "fb_total_mib": 81_559,
                "power_w": round(rng.uniform(150, 700), 1),
                "temp_c": 60,
                "pods": pods,
            }
        )
    return out


def _run_phase(
    c: TestClient,
    name: str,
    owners: dict[str, list[tuple[int, str]]],
    first: datetime,
    passes: int,
    per_push: int,
    interval: float,
    rng: random.Random,
) -> Phase:
    """Every node pushes ``per_push`` passes at a time, in time order across the pool."""
    clock = c.app.state.ctx.clock  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    samples = 0
    elapsed = 0.0
    for k in range(0, passes, per_push):
        times = [
            first + timedelta(seconds=interval * j) for j in range(k, min(k + per_push, passes))
        ]
        clock.set(max(clock.now(), times[-1]))
        for node, gpus in owners.items():
            body = {
                "node": node,
                "interval_s": interval,
                "samples": [s for ts in times for s in _pass(node, gpus, ts, rng)],
            }
            t0 = time.perf_counter()
            answer = _ok(c.post("/v1/usage/samples", json=body, headers=headers), 202)
            dt = time.perf_counter() - t0
            elapsed += dt
            latencies.append(dt * 1000)
            samples += answer["stored"]
    return Phase(name, samples, len(latencies), elapsed, latencies)


def run_bench(gpus: int, minutes: int, interval: float, database_url: str | None) -> list[str]:
    """Build the hub, push ``minutes`` of samples twice (agent-sized pushes, then 500-sample
    backlog batches), and report."""
    from fastapi.testclient import TestClient
    from sqlmodel import Session, func, select

    from api.app import create_app
    from scheduler import migrate
    from scheduler.clock import ManualClock
    from scheduler.db import make_engine
    from scheduler.settings import Settings
    from scheduler.tables import UsageBucketRow

    rng = random.Random(7)
    nodes = max(1, gpus // GPUS_PER_NODE)
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        settings = Settings(database_url=url, operator_token=TOKEN)
        clock = ManualClock(START)
        app = create_app(settings, engine=engine, clock=clock, run_cycles=False, upgrade_db=False)
        with TestClient(app) as c:
            c.headers["Authorization"] = f"Bearer {TOKEN}"
            t0 = time.perf_counter()
            owners = _build_hub(c, nodes, rng)
            setup_s = time.perf_counter() - t0
            passes = int(minutes * 60 // interval)
            live = _run_phase(
                c,
                "agent pushes (2 passes)",
                owners,
                START + timedelta(seconds=interval),
                passes,
                2,
                interval,
                rng,
            )
            backlog_first = START + timedelta(seconds=interval * (passes + 1))
            per_batch = max(1, 500 // GPUS_PER_NODE)
            backlog = _run_phase(
                c,
                "backlog (500-sample batches)",
                owners,
                backlog_first,
                passes,
                per_batch,
                interval,
                rng,
            )
            t1 = time.perf_counter()
            _ok(c.get("/v1/usage", params={"start": "2026-11-01T00:00:00Z", "group_by": "tenant"}))
            by_tenant_ms = (time.perf_counter() - t1) * 1000
            t1 = time.perf_counter()
            _ok(
                c.get(
                    "/v1/usage",
                    params={"start": "2026-11-01T00:00:00Z", "group_by": "reservation,day"},
                )
            )
            by_res_ms = (time.perf_counter() - t1) * 1000
        with Session(engine) as s:
            buckets = s.exec(select(func.count()).select_from(UsageBucketRow)).one()
        engine.dispose()
    needed = nodes * GPUS_PER_NODE / interval
    reservations = len({rid for gpus_ in owners.values() for rid, _ in gpus_ if rid})
    free = sum(1 for gpus_ in owners.values() for rid, _ in gpus_ if not rid)
    simulated_h = 2 * passes * interval / 3600
    stored = live.samples + backlog.samples
    return [
        f"pool: {nodes} nodes x {GPUS_PER_NODE} = {nodes * GPUS_PER_NODE} GPUs, a sample per GPU "
        f"every {interval:g} s (needs {needed:,.0f} samples/s); database {engine.dialect.name}",
        f"hub set-up through the API: {setup_s:.1f} s ({reservations} reservations, "
        f"{free} GPUs free)",
        live.line(needed),
        backlog.line(needed),
        f"stored: {stored:,} samples over {simulated_h:.2f} simulated h -> {buckets:,} bucket rows "
        f"(about {buckets / max(simulated_h, 1 / 60):,.0f} a simulated hour; raw rows would be "
        f"{needed * 3600:,.0f} an hour)",
        f"GET /v1/usage by tenant: {by_tenant_ms:.0f} ms; "
        f"by reservation and day: {by_res_ms:.0f} ms",
    ]


def bench_usage(
    gpus: Annotated[int, typer.Option(help="GPUs in the synthetic pool (8 per node).")] = 1000,
    minutes: Annotated[int, typer.Option(help="Simulated minutes of samples per phase.")] = 10,
    interval: Annotated[float, typer.Option(help="Agent sampling interval, seconds.")] = 10.0,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Database to run on (emptied tables expected); default: a temporary SQLite file."
        ),
    ] = None,
) -> None:
    """Usage ingest throughput: samples/s through POST /v1/usage/samples for a synthetic pool."""
    for name, value in (("gpus", gpus), ("minutes", minutes)):
        if value < 1:
            raise typer.BadParameter(f"must be at least 1, got {value}", param_hint=f"--{name}")
    if gpus < GPUS_PER_NODE:
        raise typer.BadParameter(f"must be at least {GPUS_PER_NODE}", param_hint="--gpus")
    if interval <= 0:
        raise typer.BadParameter(f"must be positive, got {interval}", param_hint="--interval")
    for line in run_bench(gpus, minutes, interval, database_url):
        typer.echo(line)


def register(cli: Cli) -> None:
    """Add ``gpupool bench usage``."""
    cli.bench.command("usage")(bench_usage)
