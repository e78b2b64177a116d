"""``fifo-backfill``: Slurm's default batch scheduling, one FIFO queue with EASY backfill.

What it follows (Slurm ``sched/backfill`` with one reservation, i.e. EASY backfilling as in
Lifka 1995 and Mu'alem & Feitelson 2001):

- One queue of all tenants' requests ordered by submit time (all priorities equal; Slurm's
  multifactor priority with only the age factor is this order). Quotas are ignored for
  ordering; only the tenant's hard limit is kept, as Slurm's ``GrpTRES`` limit would be (with
  the default quotas, limit = the pool, so it never binds).
- Jobs start in order while they fit now. The first job that does not fit (the head) gets a
  reservation: the earliest time it fits, computed from the running jobs' *requested* end
  times (their wall-time limits, i.e. the reservations' ends), on concrete nodes. That
  reservation is a future assignment of the plan, so the head has a promised start.
- The reservation's start is rounded up to the planning resolution (Slurm's
  ``bf_resolution``, 60 s by default).
- Every later job starts now only if it fits now and does not delay the head: it ends (by its
  requested duration) before the head's start, or it uses only GPUs the head's reservation
  leaves free ("shadow time" and "extra nodes"). Jobs that cannot start are unplaced
  (``capacity_busy_until``). No preemption.

Node placement is best fit (fewest free GPUs that fit), like Slurm's ``select/cons_tres``
packing. Slurm re-plans the backfill at every pass; so does this policy at every cycle.
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
from solver import Allocation, Assignment, Problem, Reason, Request, ReservationKind, Unplaced


def _level_at(intervals: list[tuple[int, int, int]], t: int) -> int:
    return sum(g for s, e, g in intervals if s <= t < e)


def _earliest(
    problem: Problem,
    pool: Pool,
    req: Request,
    ends: list[tuple[int, Allocation]],
    tenant_iv: list[tuple[int, int, int]],
) -> tuple[int, Allocation] | None:
    """The earliest time ``req`` fits as running and started work ends (by requested end),
    with its allocation then; ``None`` if not within the horizon."""
    free = dict(pool.free)
    limit = quota_of(problem, req.tenant, req.gpu_class).limit
    horizon_end = problem.now + problem.horizon_s
    for end, alloc in sorted(ends):
        if end >= horizon_end:
            return None
        for n, g in alloc:
            if n in free:
                free[n] += g
        a = place(free, req)
        if a is not None and _level_at(tenant_iv, end) + req.gpus <= limit:
            # Slurm plans backfill on a time grid (bf_resolution, 60 s by default): the
            # reservation starts at the first grid step at or after the GPUs free up.
            step = problem.resolution_s
            start = problem.now + -(-(end - problem.now) // step) * step
            return (start, a) if start < horizon_end else None
    return None


def plan_fifo_backfill(problem: Problem, config: solver.SolverConfig) -> solver.Plan:
    t0 = time.perf_counter()
    assignments: dict[int, Assignment] = {}
    unplaced: dict[int, Unplaced] = {}
    classes = sorted({r.gpu_class for r in problem.requests})
    for gpu_class in classes:
        _plan_class(problem, gpu_class, assignments, unplaced)
    return finish("fifo-backfill", assignments, unplaced, t0)


def _plan_class(
    problem: Problem,
    gpu_class: str,
    assignments: dict[int, Assignment],
    unplaced: dict[int, Unplaced],
) -> None:
    now = problem.now
    pool = Pool.of(problem, gpu_class)
    # (requested end, allocation) of everything holding GPUs, and per tenant its intervals
    ends: list[tuple[int, Allocation]] = []
    tenant_iv: dict[str, list[tuple[int, int, int]]] = {}
    for run in problem.running:
        if run.gpu_class == gpu_class and run.end > now:
            ends.append((run.end, run.allocation))
            tenant_iv.setdefault(run.tenant, []).append((run.start, run.end, run.gpus))
    queue = sorted((r for r in problem.requests if r.gpu_class == gpu_class), key=fifo_key)
    head: Assignment | None = None
    spare: dict[str, int] = {}  # GPUs per node the head's reservation leaves free at its start
    for req in queue:
        if not eligible(problem, req):
            unplaced[req.id] = Unplaced(req.id, Reason.CAPACITY_BUSY, "not before its not_before")
            continue
        limit = quota_of(problem, req.tenant, req.gpu_class).limit
        kind = kind_now(problem, pool, req)
        if not req.preemptible and kind is not ReservationKind.GUARANTEED:
            unplaced[req.id] = Unplaced(req.id, Reason.NOT_PREEMPTIBLE_NO_GUARANTEE)
            continue
        end = now + req.duration_s
        if pool.used[req.tenant] + req.gpus > limit:
            alloc = None  # not now; the head's reservation checks the limit at its start
        elif head is None:
            alloc = place(pool.free, req)
        else:
            # Backfill: GPUs still held at the head's start must be ones it leaves free.
            room = (
                pool.free
                if end <= head.start
                else {n: min(g, spare.get(n, 0)) for n, g in pool.free.items()}
            )
            alloc = place(room, req)
        if alloc is not None:
            assignments[req.id] = start_now(problem, req, alloc, kind)
            pool.take(req.tenant, alloc, kind)
            ends.append((end, alloc))
            tenant_iv.setdefault(req.tenant, []).append((now, end, req.gpus))
            if head is not None and end > head.start:
                for n, g in alloc:
                    spare[n] -= g
            continue
        if head is not None:
            if pool.used[req.tenant] + req.gpus > limit:
                unplaced[req.id] = over_limit(req)
            else:
                unplaced[req.id] = busy(req, "waits behind the queue's head (no backfill hole)")
            continue
        found = _earliest(problem, pool, req, ends, tenant_iv.get(req.tenant, []))
        if found is None:
            unplaced[req.id] = Unplaced(
                req.id, Reason.BEYOND_HORIZON, "the head fits only beyond the horizon"
            )
            continue
        start, alloc = found
        # Borrowed: the validator then never has to weigh it against future guarantees.
        head = Assignment(req.id, alloc, start, start + req.duration_s, ReservationKind.BORROWED)
        assignments[req.id] = head
        at_start = {n: pool.capacity[n] for n in pool.capacity}
        for e, a in ends:
            if e > start:
                for n, g in a:
                    if n in at_start:
                        at_start[n] -= g
        for n, g in alloc:
            at_start[n] -= g
        spare = at_start
