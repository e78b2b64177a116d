"""Metrics of one simulation, as the issue defines them.

- ``makespan_s``: first submit to last completion. ``utilization``: GPU-seconds of pods
  running (preempted runs included: those GPUs were busy) / (pool GPUs x makespan).
- ``wait_s`` of a job: start of the run that completed - submit (a preempted job restarts
  from scratch, and its wait counts from the original submit); mean, p50, p95, p99.
- JCT: completion - submit. Bounded slowdown: ``max(1, JCT / max(run time, 10 s))``
  (the usual bound of 10 s).
- ``jain_fairness``: Jain's index ``(Σx)² / (n·Σx²)`` of the tenants' mean bounded slowdowns.
- ``guarantee_shortfall_gpu_hours``: at each moment, a tenant's *unserved guaranteed demand*
  is the GPUs of its waiting jobs that fit, in submit order, into its guaranteed quota minus
  the GPUs it holds (whole jobs: a job bigger than the room left is not owed now). Only the
  part that stays unserved for longer than one cycle plus the preemption grace is counted
  (the minimum over the trailing window of that length), integrated over time, in GPU-hours.
- ``eta_mae_s``: median absolute error of the first promised start vs the first actual start,
  over the jobs that were promised a start before they started (``planned`` with an ETA);
  ``None`` for a policy that never promises one.
- solver p50/p99: the policy's planning time per cycle; ``wall_s``: the whole simulation.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.engine import SimResult
from sim.jobs import Job, JobState

SLOWDOWN_BOUND_S = 10


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def slowdown(job: Job) -> float:
    assert job.finished_at is not None
    jct = job.finished_at - job.submit_s
    return max(1.0, jct / max(job.run_s, SLOWDOWN_BOUND_S))


def jain(values: Sequence[float]) -> float | None:
    if not values:
        return None
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares > 0 else 1.0


_ORDER = {3: 0, 2: 1, 0: 2, 1: 3}


def unserved_series(jobs: Sequence[Job], guaranteed: int) -> tuple[np.ndarray, np.ndarray]:
    """Change points and the level after each of a tenant's unserved guaranteed demand."""
    events: dict[int, list[tuple[int, Job]]] = defaultdict(list)
    # kind: 0 submit (waiting), 1 run starts (served), 2 run ends (waiting again or gone)
    for j in jobs:
        if j.finished_at is None and not j.runs:
            continue
        events[j.submit_s].append((0, j))
        for k, (start, end) in enumerate(j.runs):
            events[start].append((1, j))
            last = k == len(j.runs) - 1
            events[end].append((3 if last and j.state is not JobState.WAITING else 2, j))
    waiting: dict[int, Job] = {}
    held = 0
    times, levels = [], []
    for t in sorted(events):
        # At one moment: runs end, then jobs arrive, then runs start.
        for kind, j in sorted(events[t], key=lambda e: _ORDER[e[0]]):
            if kind == 0:
                waiting[j.index] = j
            elif kind == 1:
                waiting.pop(j.index, None)
                held += j.gpus
            elif kind == 2:
                held -= j.gpus
                waiting[j.index] = j
            else:
                held -= j.gpus
        room = guaranteed - held
        owed = 0
        if room > 0:
            for j in sorted(waiting.values(), key=lambda x: (x.submit_s, x.index)):
                if j.gpus <= room - owed:
                    owed += j.gpus
                if owed >= room:
                    break
        times.append(t)
        levels.append(owed)
    return np.asarray(times, dtype=np.int64), np.asarray(levels, dtype=np.int64)


def shortfall_gpu_s(times: np.ndarray, levels: np.ndarray, end: int, tolerance_s: int) -> float:
    """∫ min(level over the trailing ``tolerance_s``) dt, on a one-second grid."""
    if len(times) == 0 or levels.max(initial=0) == 0:
        return 0.0
    start = int(times[0])
    span = max(end - start, 1)
    grid = np.zeros(span, dtype=np.int64)
    bounds = np.append(times - start, span).clip(0, span)
    for i in range(len(levels)):
        grid[bounds[i] : bounds[i + 1]] = levels[i]
    w = tolerance_s + 1
    if span < w:
        return 0.0
    lasting = np.lib.stride_tricks.sliding_window_view(grid, w).min(axis=1)
    return float(lasting.sum())


def compute(result: SimResult) -> dict[str, Any]:
    jobs = result.jobs
    done = [j for j in jobs if j.state is JobState.DONE and j.finished_at is not None]
    cfg = result.config
    first_submit = min((j.submit_s for j in jobs), default=0)
    last_end = max((j.finished_at or 0 for j in done), default=first_submit)
    makespan = max(last_end - first_submit, 0)
    busy = sum(j.gpus * (e - s) for j in jobs for s, e in j.runs)
    waits = [float(j.runs[-1][0] - j.submit_s) for j in done]
    jcts = [float(j.finished_at - j.submit_s) for j in done if j.finished_at is not None]
    slow = [slowdown(j) for j in done]
    tenants = sorted({j.tenant for j in jobs})
    per_wait: dict[str, float | None] = {}
    per_slow: dict[str, float | None] = {}
    for t in tenants:
        mine = [j for j in done if j.tenant == t]
        per_wait[t] = _mean([float(j.runs[-1][0] - j.submit_s) for j in mine])
        per_slow[t] = _mean([slowdown(j) for j in mine])
    tolerance = cfg.cycle_s + cfg.eviction_grace_s
    short_gpu_s = 0.0
    per_short: dict[str, float] = {}
    for t in tenants:
        q = result.quotas.get(t)
        times, levels = unserved_series(
            [j for j in jobs if j.tenant == t], q.guaranteed if q else 0
        )
        gs = shortfall_gpu_s(times, levels, last_end, tolerance)
        per_short[t] = gs / 3600
        short_gpu_s += gs
    errors = [
        abs(j.runs[0][0] - result.promises[j.index])
        for j in jobs
        if j.index in result.promises and j.runs
    ]
    solve = [c.solve_s for c in result.cycles]
    return {
        "policy": result.policy,
        "jobs": len(jobs),
        "completed": len(done),
        "not_completed": len(jobs) - len(done),
        "gpus": cfg.gpus,
        "makespan_s": makespan,
        "utilization": busy / (cfg.gpus * makespan) if makespan else None,
        "mean_wait_s": _mean(waits),
        "p50_wait_s": _pct(waits, 50),
        "p95_wait_s": _pct(waits, 95),
        "p99_wait_s": _pct(waits, 99),
        "mean_jct_s": _mean(jcts),
        "mean_bounded_slowdown": _mean(slow),
        "slowdown_bound_s": SLOWDOWN_BOUND_S,
        "tenant_mean_wait_s": per_wait,
        "tenant_mean_bounded_slowdown": per_slow,
        "jain_fairness": jain([v for v in per_slow.values() if v is not None]),
        "guarantee_shortfall_gpu_hours": short_gpu_s / 3600,
        "tenant_guarantee_shortfall_gpu_hours": per_short,
        "shortfall_tolerance_s": tolerance,
        "preemptions": sum(j.preemptions for j in jobs),
        "eta_mae_s": float(statistics.median(errors)) if errors else None,
        "eta_promised_jobs": len(errors),
        "solver_p50_s": _pct(solve, 50),
        "solver_p99_s": _pct(solve, 99),
        "cycles": len(result.cycles),
        "plan_fallbacks": sum(1 for c in result.cycles if c.fallback),
        "wall_s": result.wall_s,
        "quotas": {
            t: {"guaranteed": q.guaranteed, "limit": q.limit} for t, q in result.quotas.items()
        },
        "settings": {
            **result.settings,
            "cycle_s": cfg.cycle_s,
            "gpus_per_node": cfg.gpus_per_node,
            "overestimate": cfg.overestimate,
            "eviction_grace_s": cfg.eviction_grace_s,
        },
    }
