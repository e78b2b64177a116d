"""``gpupool demo``: a server on a demo pool, and a scripted workload submitted through the API.

Three startups share six nodes. Requests arrive over about a minute. For each request the
script plays the tenant's job runner: it creates the request's pods, gated, in the embedded
simulated cluster, where they "run" for a set time once the controller ungates them; when all
of a request's pods succeed the request completes early, and pods still running when the
window ends are evicted. Every state change is printed as it happens, with the planned start
and the reason.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn

from api.client import ApiError, Client

OPERATOR_TOKEN = "demo-operator-token"  # dev mode only: the demo server refuses nothing


@dataclass(frozen=True)
class Job:
    at_s: float
    tenant: str
    gpus: int
    gpu_class: str
    duration_s: int
    runs_s: float | None  # None: runs until its window ends
    name: str
    gpus_per_node: int | None = None
    preemptible: bool = True


POOL = {
    "H100-80GB": ["h100-node-1", "h100-node-2", "h100-node-3", "h100-node-4"],
    "A100-40GB": ["a100-node-1", "a100-node-2"],
}
TENANTS: dict[str, tuple[str, float, dict[str, tuple[int, int, float | None]]]] = {
    # name: (display name, weight, {class: (guaranteed, limit, budget GPU-hours/day)})
    "acme-ai": ("Acme AI", 2.0, {"H100-80GB": (16, 32, None)}),
    "blue-llama": ("Blue Llama", 1.0, {"H100-80GB": (8, 24, None), "A100-40GB": (8, 16, None)}),
    "cortex-labs": ("Cortex Labs", 1.0, {"H100-80GB": (8, 16, 0.05), "A100-40GB": (8, 16, None)}),
}
WORKLOAD = [
    Job(0, "acme-ai", 16, "H100-80GB", 40, 30, "pretrain-shard-a", gpus_per_node=8),
    Job(1, "blue-llama", 8, "H100-80GB", 30, 20, "finetune-7b"),
    Job(2, "cortex-labs", 4, "A100-40GB", 25, None, "eval-suite"),
    Job(3, "blue-llama", 16, "H100-80GB", 30, 25, "sweep-big", gpus_per_node=8),
    Job(5, "cortex-labs", 8, "H100-80GB", 20, 15, "rl-rollouts"),
    Job(8, "acme-ai", 8, "H100-80GB", 25, 12, "ablation-1"),
    Job(10, "blue-llama", 4, "A100-40GB", 20, 10, "tokenize"),
    Job(14, "acme-ai", 32, "H100-80GB", 30, 20, "full-node-gang", gpus_per_node=8),
    Job(18, "cortex-labs", 16, "H100-80GB", 30, 20, "too-big-for-budget", gpus_per_node=8),
    Job(20, "blue-llama", 48, "H100-80GB", 10, 5, "over-limit"),
    Job(24, "cortex-labs", 2, "A100-40GB", 15, 8, "notebook"),
    Job(30, "acme-ai", 8, "H100-80GB", 20, None, "ablation-2"),
]


def _free_port_server(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gpupool-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the demo server did not start on port {port} (port in use?)")
        time.sleep(0.05)
    return server, thread


def _fmt(t: str | None) -> str:
    if not t:
        return "-"
    return datetime.fromisoformat(t).strftime("%H:%M:%S")


def _setup(op: Client) -> dict[str, str]:
    for cls, nodes in POOL.items():
        op.post("/v1/gpu-classes", {"name": cls, "memory_gib": 80 if "80" in cls else 40})
        for node in nodes:
            op.post("/v1/nodes", {"name": node, "gpu_class": cls, "gpus": 8})
    keys: dict[str, str] = {}
    for name, (display, weight, quotas) in TENANTS.items():
        op.post("/v1/tenants", {"name": name, "display_name": display, "weight": weight})
        for cls, (g, limit, budget) in quotas.items():
            body = {
                "guaranteed": g,
                "limit": limit,
                "budget_gpu_hours": budget,
                "budget_period": "day",
            }
            op.put(f"/v1/tenants/{name}/quotas/{cls}", body)
        keys[name] = op.post(f"/v1/tenants/{name}/api-keys", {"name": "demo"})["token"]
    return keys


def run_demo(*, port: int, database: str, keep_serving: bool, speed: float) -> int:
    from api.app import create_app
    from scheduler.settings import Settings

    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(database + suffix).unlink()
    settings = Settings(
        database_url=f"sqlite:///{database}",
        operator_token=OPERATOR_TOKEN,
        dev_mode=True,
        port=port,
        cycle_interval_s=2.0,
        cycle_debounce_s=0.2,
        resolution_s=1,
        min_runtime_s=int(10 * speed),
    )
    os.environ.setdefault("GPUPOOL_K8S_RESYNC_S", "1")  # the controller looks every second
    app = create_app(settings)
    server, thread = _free_port_server(app, port)
    cluster = app.state.ctx.extras["controller"].cluster
    base = f"http://127.0.0.1:{port}"
    print(f"gpupool demo: server on {base} (docs: {base}/docs), database {database}")
    op = Client(base, OPERATOR_TOKEN)
    keys = _setup(op)
    print(
        f"pool: {sum(len(n) for n in POOL.values())} nodes x 8 GPUs; "
        f"tenants: {', '.join(TENANTS)}\n"
    )
    clients = {name: Client(base, key) for name, key in keys.items()}

    start = time.monotonic()
    pending = sorted(WORKLOAD, key=lambda j: j.at_s)
    jobs: dict[int, Job] = {}
    seen: dict[int, tuple[str, str | None, str | None]] = {}
    stuck: dict[int, float] = {}
    failures = 0
    while True:
        elapsed = time.monotonic() - start
        while pending and pending[0].at_s * speed <= elapsed:
            job = pending.pop(0)
            body: dict[str, Any] = {
                "gpu_class": job.gpu_class,
                "gpus": job.gpus,
                "duration": int(job.duration_s * speed),
                "name": job.name,
                "preemptible": job.preemptible,
            }
            if job.gpus_per_node:
                body["gpus_per_node"] = job.gpus_per_node
            try:
                r = clients[job.tenant].post(
                    "/v1/requests", body, headers={"Idempotency-Key": f"demo-{job.name}"}
                )
                jobs[r["id"]] = job
                per_node = r["gpus_per_node"]
                cluster.ensure_namespace(job.tenant, job.tenant)
                cluster.submit_pods(
                    job.tenant,
                    r["id"],
                    job.gpus // per_node,
                    per_node,
                    run_seconds=job.runs_s * speed if job.runs_s is not None else None,
                    prefix=job.name,
                )
                print(
                    f"{_now()}  {job.tenant:<12} #{r['id']:<3} submits {job.name}: "
                    f"{job.gpus} x {job.gpu_class} for {int(job.duration_s * speed)} s"
                )
            except ApiError as exc:
                failures += 1
                print(f"{_now()}  {job.tenant:<12} submit {job.name} refused: {exc}")
        for r in op.all_pages("/v1/requests"):
            rid = r["id"]
            tracked = jobs.get(rid)
            if tracked is None:
                continue
            key = (r["state"], r["planned_start"], (r["reason"] or {}).get("code"))
            if seen.get(rid) != key:
                seen[rid] = key
                _show(r, tracked)
            reason_code = (r["reason"] or {}).get("code")
            if r["state"] == "pending" and reason_code == "budget_exhausted":
                waited = time.monotonic() - stuck.setdefault(rid, time.monotonic())
                if waited > 8 * speed:
                    print(
                        f"{_now()}  {r['tenant']:<12} #{rid:<3} gives up on {tracked.name}: "
                        "out of budget"
                    )
                    with contextlib.suppress(ApiError):
                        clients[tracked.tenant].post(f"/v1/requests/{rid}/cancel")
        terminal = {"completed", "expired", "cancelled", "rejected", "failed", "preempted"}
        if not pending and jobs and all(seen.get(i, ("",))[0] in terminal for i in jobs):
            break
        if elapsed > 600 * speed:
            print("demo: giving up after 10 minutes")
            failures += 1
            break
        time.sleep(0.5)
    _summary(op, jobs)
    if keep_serving:
        print(f"\nThe server keeps running: open {base}/docs")
        print(f"  operator token: {OPERATOR_TOKEN}")
        for name, token in keys.items():
            print(f"  {name} API key: {token}")
        print("Press Ctrl-C to stop.")
        try:
            while thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    server.should_exit = True
    thread.join(10)
    return 1 if failures else 0


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def _show(r: dict[str, Any], job: Job) -> None:
    state = r["state"]
    reason = r["reason"] or {}
    extra = ""
    if state == "planned":
        res = r["reservation"] or {}
        where = ", ".join(a["node"] for a in res.get("allocation", []))
        extra = f"starts {_fmt(r['planned_start'])} ({res.get('kind', '')}) on {where}"
    elif state == "active":
        res = r["reservation"] or {}
        where = ", ".join(f"{a['node']}:{a['gpus']}" for a in res.get("allocation", []))
        extra = f"running on {where} until {_fmt(r['planned_end'])} ({res.get('kind', '')})"
    elif reason:
        extra = f"[{reason.get('code')}] {reason.get('message', '')}"
    print(f"{_now()}  {r['tenant']:<12} #{r['id']:<3} {job.name:<20} {state:<9} {extra}")


def _summary(op: Client, jobs: dict[int, Job]) -> None:
    rows = [r for r in op.all_pages("/v1/requests") if r["id"] in jobs]
    print("\nsummary:")
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    print("  " + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())))
    waits = [
        (
            datetime.fromisoformat(r["started_at"]) - datetime.fromisoformat(r["submitted_at"])
        ).total_seconds()
        for r in rows
        if r["started_at"]
    ]
    if waits:
        print(
            f"  mean wait before start: {sum(waits) / len(waits):.1f} s "
            f"over {len(waits)} started requests"
        )
