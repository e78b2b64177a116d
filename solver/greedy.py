"""Greedy list scheduling: place requests one at a time, earliest feasible start first.

Order: priority (high first), then fair share (decayed usage per unit of weight, low first),
then submission time. Each request takes the earliest start at which a gang of
``nodes_needed`` nodes of its class has ``gpus_per_node`` GPUs free for its whole duration,
within its window, its tenant's limit and budget. Nodes are chosen best-fit (fullest first),
which keeps whole nodes free for large gangs.
"""

from __future__ import annotations

import time
from collections import defaultdict

from solver.model import (
    Assignment,
    Plan,
    Problem,
    Reason,
    Request,
    ReservationKind,
    Unplaced,
    allocation_of,
)
from solver.profile import Profile


def _order_key(problem: Problem, r: Request) -> tuple[int, float, int, int]:
    tenant = problem.tenants.get(r.tenant)
    share = tenant.usage / tenant.weight if tenant and tenant.weight > 0 else 0.0
    return (-r.priority, share, r.submitted_at, r.id)


def plan_greedy(problem: Problem) -> Plan:
    started = time.perf_counter()
    node_use: dict[str, Profile] = defaultdict(Profile)
    tenant_use: dict[tuple[str, str], Profile] = defaultdict(Profile)
    tenant_guaranteed: dict[tuple[str, str], Profile] = defaultdict(Profile)
    budget_used: dict[tuple[str, str], float] = defaultdict(float)
    for run in problem.running:
        for node, gpus in run.allocation:
            node_use[node].add(run.start, run.end, gpus)
        key = (run.tenant, run.gpu_class)
        tenant_use[key].add(run.start, run.end, run.gpus)
        if run.kind is ReservationKind.GUARANTEED:
            tenant_guaranteed[key].add(run.start, run.end, run.gpus)

    nodes_by_class: dict[str, list[str]] = defaultdict(list)
    sizes: dict[str, int] = {}
    draining_by_class: dict[str, int] = defaultdict(int)
    for node in problem.nodes:
        sizes[node.name] = node.gpus
        if node.schedulable:
            nodes_by_class[node.gpu_class].append(node.name)
        else:
            draining_by_class[node.gpu_class] += 1

    horizon_end = problem.now + problem.horizon_s
    assignments: dict[int, Assignment] = {}
    unplaced: dict[int, Unplaced] = {}
    objective = 0.0
    for req in sorted(problem.requests, key=lambda r: _order_key(problem, r)):
        tenant = problem.tenants.get(req.tenant)
        quota = tenant.quotas.get(req.gpu_class) if tenant else None
        candidates = nodes_by_class.get(req.gpu_class, [])
        fits = [n for n in candidates if sizes[n] >= req.gpus_per_node]
        if quota is None or quota.limit < req.gpus:
            unplaced[req.id] = Unplaced(
                req.id, Reason.QUOTA_EXHAUSTED, "the request is larger than the tenant's limit"
            )
            continue
        if not req.preemptible and quota.guaranteed < req.gpus:
            unplaced[req.id] = Unplaced(req.id, Reason.NOT_PREEMPTIBLE_NO_GUARANTEE)
            continue
        if len(fits) < req.nodes_needed:
            reason = (
                Reason.NODES_DRAINING
                if draining_by_class.get(req.gpu_class)
                else Reason.TOO_LARGE_FOR_POOL
            )
            unplaced[req.id] = Unplaced(req.id, reason)
            continue
        key = (req.tenant, req.gpu_class)
        cost = float(req.gpus * req.duration_s)
        if quota.budget_gpu_s is not None and budget_used[key] + cost > quota.budget_gpu_s:
            unplaced[req.id] = Unplaced(req.id, Reason.BUDGET_EXHAUSTED)
            continue
        earliest = max(problem.now, req.not_before or problem.now)
        times = {earliest}
        for n in fits:
            times.update(node_use[n].breakpoints_after(earliest))
        times.update(tenant_use[key].breakpoints_after(earliest))
        placed = False
        blocked_by_limit = False
        for t in sorted(times):
            if t >= horizon_end:
                break
            end = t + req.duration_s
            if req.deadline is not None and end > req.deadline:
                break
            if tenant_use[key].peak(t, end) + req.gpus > quota.limit:
                blocked_by_limit = True
                continue
            if tenant_guaranteed[key].peak(t, end) + req.gpus <= quota.guaranteed:
                kind = ReservationKind.GUARANTEED
            elif req.preemptible:
                kind = ReservationKind.BORROWED
            else:
                continue
            free = [(sizes[n] - node_use[n].peak(t, end), n) for n in fits]
            usable = sorted((f, n) for f, n in free if f >= req.gpus_per_node)
            if len(usable) < req.nodes_needed:
                continue
            chosen = [n for _, n in usable[: req.nodes_needed]]
            for n in chosen:
                node_use[n].add(t, end, req.gpus_per_node)
            tenant_use[key].add(t, end, req.gpus)
            if kind is ReservationKind.GUARANTEED:
                tenant_guaranteed[key].add(t, end, req.gpus)
            budget_used[key] += cost
            assignments[req.id] = Assignment(
                req.id, allocation_of({n: req.gpus_per_node for n in chosen}), t, end, kind
            )
            objective -= cost * (t - problem.now)
            placed = True
            break
        if not placed:
            if req.deadline is not None:
                reason = Reason.DEADLINE_UNREACHABLE
            elif blocked_by_limit:
                reason = Reason.QUOTA_EXHAUSTED
            else:
                reason = Reason.CAPACITY_BUSY
            unplaced[req.id] = Unplaced(req.id, reason)
    return Plan(
        assignments=assignments,
        unplaced=unplaced,
        planner="greedy",
        objective=objective,
        solve_time_s=time.perf_counter() - started,
    )
