"""``drf``: weighted max-min fair sharing of GPUs (Dominant Resource Fairness with one
resource, i.e. progressive filling), work-conserving, with no use of durations.

What it follows (Ghodsi et al., NSDI 2011, as Mesos' DRF allocator and YARN's fair
scheduler apply it): with GPUs the only resource, a tenant's dominant share is its GPUs in
use divided by its weight. Repeatedly, the tenant with the lowest weighted share that has a
waiting request which fits now gets its oldest such request started (FIFO within a tenant);
a tenant none of whose requests fits drops out of this round. This fills the pool as far as
requests fit (work-conserving) and never looks at durations.

Weights are the tenants' guaranteed quotas (their entitled shares of the pool); a tenant
without a guarantee has a tiny weight, so it is served only after every other tenant that
can use GPUs; if no tenant has a guarantee, the tenants' own weights are used. The tenant's
hard limit is kept. DRF allocates, it does not preempt: running work is never stopped.
"""

from __future__ import annotations

import time

import solver
from sim.policies.common import (
    Pool,
    busy,
    eligible,
    fifo_key,
    finish,
    kind_now,
    over_limit,
    place,
    quota_of,
    start_now,
)
from solver import Assignment, Problem, Reason, ReservationKind, Unplaced

_TINY = 1e-6


def weights(problem: Problem, gpu_class: str, tenants: list[str]) -> dict[str, float]:
    guaranteed = {t: quota_of(problem, t, gpu_class).guaranteed for t in tenants}
    if any(guaranteed.values()):
        return {t: float(g) if g > 0 else _TINY for t, g in guaranteed.items()}
    return {t: problem.tenants[t].weight if t in problem.tenants else 1.0 for t in tenants}


def plan_drf(problem: Problem, config: solver.SolverConfig) -> solver.Plan:
    t0 = time.perf_counter()
    assignments: dict[int, Assignment] = {}
    unplaced: dict[int, Unplaced] = {}
    for gpu_class in sorted({r.gpu_class for r in problem.requests}):
        pool = Pool.of(problem, gpu_class)
        queues: dict[str, list[solver.Request]] = {}
        for r in sorted(problem.requests, key=fifo_key):
            if r.gpu_class != gpu_class:
                continue
            if not eligible(problem, r):
                unplaced[r.id] = Unplaced(r.id, Reason.CAPACITY_BUSY, "not before its not_before")
                continue
            queues.setdefault(r.tenant, []).append(r)
        names = sorted(set(queues) | set(pool.used) | set(problem.tenants))
        w = weights(problem, gpu_class, names)
        active = set(queues)
        while active:
            tenant = min(active, key=lambda t: (pool.used[t] / w[t], t))
            chosen = None
            for req in queues[tenant]:
                kind = kind_now(problem, pool, req)
                if not req.preemptible and kind is not ReservationKind.GUARANTEED:
                    continue
                if pool.used[tenant] + req.gpus > quota_of(problem, tenant, gpu_class).limit:
                    continue
                alloc = place(pool.free, req)
                if alloc is not None:
                    chosen = (req, alloc, kind)
                    break
            if chosen is None:
                active.discard(tenant)
                continue
            req, alloc, kind = chosen
            assignments[req.id] = start_now(problem, req, alloc, kind)
            pool.take(tenant, alloc, kind)
            queues[tenant].remove(req)
            if not queues[tenant]:
                active.discard(tenant)
        for tenant, reqs in queues.items():
            for req in reqs:
                if pool.used[tenant] + req.gpus > quota_of(problem, tenant, gpu_class).limit:
                    unplaced[req.id] = over_limit(req)
                elif not req.preemptible:
                    unplaced[req.id] = Unplaced(req.id, Reason.NOT_PREEMPTIBLE_NO_GUARANTEE)
                else:
                    unplaced[req.id] = busy(req, "no GPUs free now")
    return finish("drf", assignments, unplaced, t0)
