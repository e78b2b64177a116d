"""Realistic random planning instances and the benchmark loop behind ``gpupool bench solver``.

Pure: no I/O; the CLI command prints and writes what :func:`run_bench` returns. An instance
has three GPU classes (8-GPU H100 and A100 nodes, 4-GPU L40S nodes; a few nodes draining),
tenants of Zipf-like sizes with guaranteed quotas covering about 60 % of each class, limits of
two to four times that, some budgets, and decayed usage; requests of 1, 2, 4 and 8 GPUs and
multi-node gangs, durations from minutes to days, some with ``not_before``, deadlines, higher
or lower priority, or not preemptible; running reservations holding most of the pool now.
Every other instance is a re-plan: the previous instance a few minutes later, with new
arrivals and its last plan as ``previous``.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from solver.api import SolverConfig, plan, validate
from solver.model import (
    Assignment,
    Node,
    Plan,
    Problem,
    Quota,
    Request,
    ReservationKind,
    Running,
    Tenant,
)

NOW = 1_767_225_600  # 2026-01-01 00:00 UTC: a fixed, hour-aligned start
CLASSES = (("H100-80GB", 0.6, 8), ("A100-80GB", 0.3, 8), ("L40S", 0.1, 4))
SHAPES = (
    (1, 1, 0.25),
    (2, 2, 0.2),
    (4, 4, 0.2),
    (8, 8, 0.2),
    (16, 8, 0.08),
    (32, 8, 0.05),
    (64, 8, 0.02),
)


def _duration(rng: random.Random) -> int:
    """Minutes to days, log-uniform-ish with a median of a few hours, whole minutes."""
    hours = math.exp(rng.uniform(math.log(1 / 6), math.log(96)))
    return max(600, int(hours * 3600) // 60 * 60)


def generate(gpus: int, pending: int, tenants: int, seed: int, now: int = NOW) -> Problem:
    """One random instance with about ``gpus`` GPUs, ``pending`` requests, ``tenants`` tenants."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    for cls, share, size in CLASSES:
        count = max(1, round(gpus * share / size))
        for i in range(count):
            nodes.append(Node(f"{cls.lower()}-{i:04d}", cls, size, schedulable=rng.random() > 0.02))
    capacity = {cls: sum(n.gpus for n in nodes if n.gpu_class == cls) for cls, _, _ in CLASSES}

    sizes = [1.0 / (k + 1) ** 0.8 for k in range(tenants)]
    total_size = sum(sizes)
    tenant_map: dict[str, Tenant] = {}
    for k in range(tenants):
        name = f"tenant-{k:03d}"
        share = sizes[k] / total_size
        quotas: dict[str, Quota] = {}
        for cls, _, size in CLASSES:
            if k > 0 and rng.random() < 0.25:
                continue  # not every tenant uses every class
            guaranteed = int(capacity[cls] * 0.6 * share)
            limit = max(size * 2, guaranteed * rng.choice((2, 3, 4)), 8)
            limit = min(limit, capacity[cls])
            guaranteed = min(guaranteed, limit)
            budget = None
            if rng.random() < 0.3:
                # Enough for the limit held for one to five days of the week.
                budget = float(limit * rng.randint(24, 120) * 3600)
            quotas[cls] = Quota(guaranteed, limit, budget)
        tenant_map[name] = Tenant(
            name, quotas, weight=rng.choice((1.0, 1.0, 2.0)), usage=rng.lognormvariate(12, 2)
        )
    names = list(tenant_map)

    running = _running(rng, nodes, tenant_map, now)
    requests = [_request(rng, i, names, tenant_map, now) for i in range(pending)]
    return Problem(
        now=now,
        nodes=tuple(nodes),
        tenants=tenant_map,
        requests=tuple(requests),
        running=tuple(running),
    )


def _request(
    rng: random.Random, rid: int, names: list[str], tenants: dict[str, Tenant], now: int
) -> Request:
    # Bigger tenants send more requests.
    name = names[min(int(rng.paretovariate(1.2)) - 1, len(names) - 1)]
    if rng.random() < 0.5:
        name = rng.choice(names)
    classes = list(tenants[name].quotas) or [CLASSES[0][0]]
    # Demand follows supply: a class is asked for in proportion to its share of the pool.
    share = {c: w for c, w, _ in CLASSES}
    cls = rng.choices(classes, weights=[share.get(c, 0.1) for c in classes])[0]
    node_size = next(size for c, _, size in CLASSES if c == cls)
    r = rng.random()
    acc = 0.0
    gpus, per_node = 1, 1
    for g, p, w in SHAPES:
        acc += w
        if r < acc:
            gpus, per_node = g, p
            break
    per_node = min(per_node, node_size)
    limit = tenants[name].quotas[cls].limit if cls in tenants[name].quotas else 0
    while gpus > max(limit, per_node) and rng.random() < 0.9:
        gpus //= 2  # most tenants ask within their limit
        per_node = min(per_node, gpus)
    duration = _duration(rng)
    not_before = now + rng.randint(1, 72) * 3600 if rng.random() < 0.1 else None
    deadline = None
    if rng.random() < 0.1:
        deadline = (not_before or now) + duration + rng.randint(1, 96) * 3600
    return Request(
        id=rid,
        tenant=name,
        gpu_class=cls,
        gpus=gpus,
        gpus_per_node=per_node,
        duration_s=duration,
        submitted_at=now - rng.randint(0, 2 * 24 * 3600),
        not_before=not_before,
        deadline=deadline,
        priority=rng.choices((-1, 0, 1, 2), weights=(1, 12, 3, 1))[0],
        preemptible=rng.random() < 0.85,
    )


def _running(
    rng: random.Random, nodes: list[Node], tenants: dict[str, Tenant], now: int
) -> list[Running]:
    """Running reservations on about 70 % of the GPUs, within the tenants' limits."""
    out: list[Running] = []
    held: dict[tuple[str, str], int] = {}
    held_g: dict[tuple[str, str], int] = {}
    rid = 1_000_000
    for node in nodes:
        free = node.gpus
        while free > 0 and rng.random() < 0.75:
            g = min(free, rng.choice((1, 2, 4, 8)))
            users = [t for t in tenants.values() if node.gpu_class in t.quotas]
            if not users:
                break
            t = rng.choice(users)
            q = t.quotas[node.gpu_class]
            key = (t.name, node.gpu_class)
            if held.get(key, 0) + g > q.limit:
                break
            guaranteed = held_g.get(key, 0) + g <= q.guaranteed and rng.random() < 0.6
            kind = ReservationKind.GUARANTEED if guaranteed else ReservationKind.BORROWED
            held[key] = held.get(key, 0) + g
            if guaranteed:
                held_g[key] = held_g.get(key, 0) + g
            start = now - rng.randint(60, 24 * 3600)
            end = now + _duration(rng) // 2
            out.append(
                Running(
                    rid,
                    t.name,
                    node.gpu_class,
                    ((node.name, g),),
                    start,
                    end,
                    kind,
                    preemptible=rng.random() < 0.9,
                )
            )
            rid += 1
            free -= g
    return out


def replan(problem: Problem, last: Plan, seed: int, arrivals: int, advance_s: int = 300) -> Problem:
    """``problem`` ``advance_s`` later: reservations that started are running, ``arrivals``
    new requests wait, and the rest keep ``last``'s assignments as ``previous``."""
    rng = random.Random(seed)
    now = problem.now + advance_s
    by_id = {r.id: r for r in problem.requests}
    running = [r for r in problem.running if r.end > now]
    preempted = {p.request_id: p.at for p in last.preemptions if p.at <= now}
    running = [r for r in running if r.request_id not in preempted]
    waiting: list[Request] = []
    previous: dict[int, Assignment] = {}
    for rid, req in by_id.items():
        a = last.assignments.get(rid)
        if a is not None and a.start <= now:
            running.append(
                Running(
                    rid,
                    req.tenant,
                    req.gpu_class,
                    a.allocation,
                    a.start,
                    a.end,
                    a.kind,
                    req.priority,
                    req.preemptible,
                )
            )
            continue
        waiting.append(req)
        if a is not None:
            previous[rid] = a
    names = list(problem.tenants)
    start_id = max(by_id, default=0) + 1
    new = [_request(rng, start_id + i, names, dict(problem.tenants), now) for i in range(arrivals)]
    new = [replace(r, submitted_at=now) for r in new]
    return replace(
        problem,
        now=now,
        requests=tuple(waiting + new),
        running=tuple(running),
        previous=previous,
    )


@dataclass
class InstanceResult:
    """One instance's numbers."""

    seed: int
    replan: bool
    requests: int
    time_s: float
    greedy_time_s: float
    objective: float
    greedy_objective: float
    bound: float | None
    gap: float | None
    status: str
    placed: int
    preemptions: int
    violations: int
    greedy_violations: int
    notes: list[str] = field(default_factory=list)


def run_bench(
    gpus: int,
    pending: int,
    tenants: int,
    seed: int,
    instances: int,
    config: SolverConfig,
    progress: Callable[[InstanceResult], None] | None = None,
) -> dict[str, object]:
    """Plan ``instances`` instances (every second one a re-plan of the one before) with the
    configured planner and with greedy; validate both; return a JSON-ready summary."""
    results: list[InstanceResult] = []
    problem: Problem | None = None
    last: Plan | None = None
    for i in range(instances):
        s = seed + i
        if i % 2 == 1 and problem is not None and last is not None:
            problem = replan(problem, last, s, arrivals=max(1, pending // 20))
            is_replan = True
        else:
            problem = generate(gpus, pending, tenants, s)
            is_replan = False
        t0 = time.perf_counter()
        greedy = plan(problem, replace(config, planner="greedy"))
        t1 = time.perf_counter()
        result = plan(problem, config)
        t2 = time.perf_counter()
        last = result
        r = InstanceResult(
            seed=s,
            replan=is_replan,
            requests=len(problem.requests),
            time_s=t2 - t1,
            greedy_time_s=t1 - t0,
            objective=result.objective,
            greedy_objective=greedy.objective,
            bound=result.bound,
            gap=result.gap,
            status=result.status,
            placed=len(result.assignments),
            preemptions=len(result.preemptions),
            violations=len(validate(problem, result)),
            greedy_violations=len(validate(problem, greedy)),
            notes=list(result.notes),
        )
        results.append(r)
        if progress is not None:
            progress(r)
    times = sorted(r.time_s for r in results)
    gaps = [r.gap for r in results if r.gap is not None]
    return {
        "gpus": gpus,
        "pending": pending,
        "tenants": tenants,
        "seed": seed,
        "instances": instances,
        "planner": config.planner,
        "time_limit_s": config.time_limit_s,
        "workers": config.workers,
        "p50_s": statistics.median(times),
        "p99_s": _quantile(times, 0.99),
        "max_s": times[-1],
        "gap": max(gaps) if gaps else None,
        "gap_median": statistics.median(gaps) if gaps else None,
        "objective": sum(r.objective for r in results),
        "greedy_objective": sum(r.greedy_objective for r in results),
        "objective_ge_greedy": all(r.objective >= r.greedy_objective for r in results),
        "violations": sum(r.violations + r.greedy_violations for r in results),
        "results": [r.__dict__ for r in results],
    }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile (with few instances, p99 is the worst one)."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]
