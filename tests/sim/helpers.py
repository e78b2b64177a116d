"""Tiny traces for the simulator's tests (written in the test's temp dir, never ../shared)."""

from __future__ import annotations

from pathlib import Path

from sim.engine import SimConfig, SimResult, simulate
from sim.jobs import Job
from sim.quotas import TenantQuota
from sim.trace import TraceJob, write_trace


def job(jid: str, tenant: str, submit: int, duration: int, gpus: int) -> TraceJob:
    return TraceJob(jid, tenant, submit, duration, gpus)


def run(
    jobs: list[TraceJob],
    policy: str,
    quotas: dict[str, tuple[int, int]],
    *,
    gpus: int = 8,
    gpus_per_node: int = 4,
    **config: object,
) -> SimResult:
    cfg = SimConfig(gpus=gpus, gpus_per_node=gpus_per_node, **config)  # type: ignore[arg-type]
    q = {t: TenantQuota(g, lim) for t, (g, lim) in quotas.items()}
    return simulate(jobs, cfg, q, policy)


def by_id(result: SimResult) -> dict[str, Job]:
    return {j.trace.job_id: j for j in result.jobs}


def starts(result: SimResult) -> dict[str, list[int]]:
    return {j.trace.job_id: [s for s, _ in j.runs] for j in result.jobs}


def trace_file(tmp: Path, jobs: list[TraceJob], name: str = "trace.csv") -> Path:
    path = tmp / name
    write_trace(path, jobs)
    return path
