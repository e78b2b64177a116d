"""``kueue``: Kubernetes Kueue with a ClusterQueue per tenant in one cohort.

What it follows (Kueue v0.9+ scheduler, ``pkg/scheduler/scheduler.go`` and
``pkg/scheduler/preemption``):

- Each tenant has a ClusterQueue whose ``nominalQuota`` of GPUs is its guaranteed quota; all
  ClusterQueues share one cohort, whose capacity is the sum of the nominal quotas. A queue may
  borrow idle quota of the cohort up to its limit (``borrowingLimit`` = limit - nominal).
- Queueing is ``BestEffortFIFO``: within a queue, workloads by priority then creation time; a
  head that cannot be admitted is set aside and the next one is tried.
- Each scheduling cycle takes the head of every queue and orders them: workloads that fit
  without borrowing first, then by priority, then by creation time. A workload is admitted if
  its queue's usage stays within nominal + borrowable and the cohort has the quota free. Kueue
  runs cycles back to back, so this policy repeats them until nothing more is admitted.
- ``reclaimWithinCohort: Any``: a workload that would fit within its queue's nominal quota but
  finds the cohort's quota lent out preempts workloads of queues that are borrowing, newest
  admitted first, only while their queue stays over its nominal quota, with a fill-back pass
  that spares victims not needed; ``withinClusterQueue: Never`` (one priority).
- Durations are never used.

Where the hub's rules shape it: a workload is admitted only when its pods also fit on nodes now
(as with Kueue's topology-aware scheduling), placed best-fit; only reservations labelled
borrowed (admitted while the queue was over nominal) can be reclaimed, and only after the
hub's minimum runtime (``min_runtime_s``), which :func:`solver.validate` enforces for every
policy. The preempting workload starts in the same cycle on the GPUs its victims free (real
Kueue admits it once the victims have gone, a moment later).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import solver
from sim.policies.common import (
    Pool,
    busy,
    eligible,
    finish,
    over_limit,
    place,
    quota_of,
    start_now,
)
from solver import Assignment, Preemption, Problem, Reason, ReservationKind, Running, Unplaced


def _queue_key(r: solver.Request) -> tuple[int, int, int]:
    return (-r.priority, r.submitted_at, r.id)


def plan_kueue(problem: Problem, config: solver.SolverConfig) -> solver.Plan:
    t0 = time.perf_counter()
    assignments: dict[int, Assignment] = {}
    unplaced: dict[int, Unplaced] = {}
    preemptions: list[Preemption] = []
    for gpu_class in sorted({r.gpu_class for r in problem.requests}):
        _plan_class(problem, gpu_class, assignments, unplaced, preemptions)
    return finish("kueue", assignments, unplaced, t0, tuple(preemptions))


def _plan_class(
    problem: Problem,
    gpu_class: str,
    assignments: dict[int, Assignment],
    unplaced: dict[int, Unplaced],
    preemptions: list[Preemption],
) -> None:
    pool = Pool.of(problem, gpu_class)
    tenants = sorted(set(problem.tenants) | {r.tenant for r in problem.requests})
    nominal = {t: quota_of(problem, t, gpu_class).guaranteed for t in tenants}
    limit = {t: quota_of(problem, t, gpu_class).limit for t in tenants}
    cohort = min(sum(nominal.values()), sum(pool.capacity.values()))
    queues: dict[str, list[solver.Request]] = {}
    for r in sorted(problem.requests, key=_queue_key):
        if r.gpu_class != gpu_class:
            continue
        if not eligible(problem, r):
            unplaced[r.id] = Unplaced(r.id, Reason.CAPACITY_BUSY, "not before its not_before")
            continue
        queues.setdefault(r.tenant, []).append(r)
    victims_pool = [
        run
        for run in problem.running
        if run.gpu_class == gpu_class
        and run.end > problem.now
        and run.kind is ReservationKind.BORROWED
        and run.preemptible
        and run.start + problem.min_runtime_s <= problem.now
    ]
    preempted: set[int] = set()
    position = {t: 0 for t in queues}  # BestEffortFIFO: next workload not yet tried
    while True:
        heads = [(t, queues[t][position[t]]) for t in queues if position[t] < len(queues[t])]
        if not heads:
            break
        heads.sort(
            key=lambda h: (
                pool.used[h[0]] + h[1].gpus > nominal[h[0]],  # borrowing entries last
                -h[1].priority,
                h[1].submitted_at,
                h[1].id,
            )
        )
        for tenant, req in heads:
            position[tenant] += 1
            used_total = sum(pool.used.values())
            within_nominal = pool.used[tenant] + req.gpus <= nominal[tenant]
            kind = ReservationKind.GUARANTEED if within_nominal else ReservationKind.BORROWED
            if not req.preemptible and not within_nominal:
                unplaced[req.id] = Unplaced(req.id, Reason.NOT_PREEMPTIBLE_NO_GUARANTEE)
                continue
            if pool.used[tenant] + req.gpus > limit[tenant]:
                unplaced[req.id] = over_limit(req)
                continue
            if used_total + req.gpus <= cohort:
                alloc = place(pool.free, req)
                if alloc is not None:
                    assignments[req.id] = start_now(problem, req, alloc, kind)
                    pool.take(tenant, alloc, kind)
                    continue
            if within_nominal:
                victims = _reclaim(problem, pool, req, nominal, cohort, victims_pool, preempted)
                if victims is not None:
                    chosen, alloc = victims
                    for v in chosen:
                        pool.give(v.tenant, v.allocation, v.kind)
                        preempted.add(v.request_id)
                        preemptions.append(Preemption(v.request_id, problem.now, tenant))
                    assignments[req.id] = start_now(problem, req, alloc, kind)
                    pool.take(tenant, alloc, kind)
                    continue
            unplaced[req.id] = busy(req, "no quota or GPUs free in the cohort now")


def _fits(
    pool: Pool, req: solver.Request, cohort: int, removed: Sequence[Running]
) -> solver.Allocation | None:
    freed = sum(v.gpus for v in removed)
    if sum(pool.used.values()) - freed + req.gpus > cohort:
        return None
    free = dict(pool.free)
    for v in removed:
        for n, g in v.allocation:
            if n in free:
                free[n] += g
    # Prefer the victims' nodes (best fit among them): each preemption must free GPUs the
    # workload uses.
    victim_nodes = {n for v in removed for n, _ in v.allocation}
    per = req.gpus_per_node
    fitting = sorted((n not in victim_nodes, g, n) for n, g in free.items() if g >= per)
    if len(fitting) < req.nodes_needed:
        return None
    return solver.allocation_of({n: per for _, _, n in fitting[: req.nodes_needed]})


def _reclaim(
    problem: Problem,
    pool: Pool,
    req: solver.Request,
    nominal: dict[str, int],
    cohort: int,
    candidates: list[Running],
    preempted: set[int],
) -> tuple[list[Running], solver.Allocation] | None:
    """Victims (newest admitted first, only from queues over nominal) whose preemption lets
    ``req`` fit, after sparing those not needed; ``None`` when reclaiming cannot help."""
    order = sorted(
        (c for c in candidates if c.request_id not in preempted and c.tenant != req.tenant),
        key=lambda c: (c.priority, -c.start, -c.request_id),
    )
    removed: list[Running] = []
    usage = dict(pool.used)
    alloc = None
    for c in order:
        if usage.get(c.tenant, 0) <= nominal.get(c.tenant, 0):
            continue  # that queue is no longer borrowing
        removed.append(c)
        usage[c.tenant] -= c.gpus
        alloc = _fits(pool, req, cohort, removed)
        if alloc is not None:
            break
    if alloc is None:
        return None
    # Fill back: spare the victims the workload does not need, last removed first.
    for c in list(reversed(removed[:-1])):
        rest = [v for v in removed if v is not c]
        if _fits(pool, req, cohort, rest) is not None:
            removed = rest
    alloc = _fits(pool, req, cohort, removed)
    if alloc is None:
        return None
    while True:
        nodes = {n for n, _ in alloc}
        idle = [v for v in removed if not nodes & {n for n, _ in v.allocation}]
        if not idle:
            return removed, alloc
        # A victim whose GPUs the workload would not use is not a reclaim: spare it if the
        # workload still fits, else give up.
        removed = [v for v in removed if v is not idle[0]]
        again = _fits(pool, req, cohort, removed)
        if again is None or not removed:
            return None
        alloc = again
