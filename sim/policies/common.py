"""What the baseline policies share: the pool's free GPUs now, best-fit gang placement,
quota bookkeeping and the plan's values.

Baselines decide for "now" only: a request they start gets an assignment beginning at
``problem.now``; the others are :class:`~solver.Unplaced` (``capacity_busy_until``, or
``quota_exhausted`` when the tenant's limit stops them). Reservations are labelled guaranteed
when the tenant's GPUs, this one included, stay within its guaranteed quota, else borrowed, so
the plan passes :func:`solver.validate` like any other.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import solver
from solver import Allocation, Assignment, Problem, Reason, Request, ReservationKind, Unplaced


def fifo_key(r: Request) -> tuple[int, int]:
    """Submit order (ties by request id: the order of submission)."""
    return (r.submitted_at, r.id)


def place(free: Mapping[str, int], req: Request) -> Allocation | None:
    """A best-fit allocation for ``req`` on ``free`` GPUs per node, or ``None``: the gang's
    nodes are the ones with the fewest free GPUs that still fit, so that whole nodes stay
    whole for multi-node work (ties by node name)."""
    need, per = req.nodes_needed, req.gpus_per_node
    fitting = sorted((g, n) for n, g in free.items() if g >= per)
    if len(fitting) < need:
        return None
    return solver.allocation_of({n: per for _, n in fitting[:need]})


@dataclass
class Pool:
    """Free GPUs per node now and each tenant's GPUs now (total and guaranteed-labelled)."""

    now: int
    capacity: dict[str, int]
    free: dict[str, int]
    used: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    guaranteed_used: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def of(cls, problem: Problem, gpu_class: str) -> Pool:
        capacity = {
            n.name: n.gpus for n in problem.nodes if n.gpu_class == gpu_class and n.schedulable
        }
        free = dict(capacity)
        pool = cls(problem.now, capacity, free)
        for run in problem.running:
            if run.gpu_class != gpu_class or run.end <= problem.now:
                continue
            for n, g in run.allocation:
                if n in free:
                    free[n] -= g
            pool.used[run.tenant] += run.gpus
            if run.kind is ReservationKind.GUARANTEED:
                pool.guaranteed_used[run.tenant] += run.gpus
        return pool

    def take(self, tenant: str, alloc: Allocation, kind: ReservationKind) -> None:
        gpus = 0
        for n, g in alloc:
            self.free[n] -= g
            gpus += g
        self.used[tenant] += gpus
        if kind is ReservationKind.GUARANTEED:
            self.guaranteed_used[tenant] += gpus

    def give(self, tenant: str, alloc: Allocation, kind: ReservationKind) -> None:
        gpus = 0
        for n, g in alloc:
            self.free[n] += g
            gpus += g
        self.used[tenant] -= gpus
        if kind is ReservationKind.GUARANTEED:
            self.guaranteed_used[tenant] -= gpus


def quota_of(problem: Problem, tenant: str, gpu_class: str) -> solver.Quota:
    t = problem.tenants.get(tenant)
    q = t.quotas.get(gpu_class) if t is not None else None
    return q if q is not None else solver.Quota(0, 0)


def kind_now(problem: Problem, pool: Pool, req: Request) -> ReservationKind:
    """Guaranteed when the tenant stays within its guaranteed GPUs with this request."""
    q = quota_of(problem, req.tenant, req.gpu_class)
    if pool.used[req.tenant] + req.gpus <= q.guaranteed:
        return ReservationKind.GUARANTEED
    return ReservationKind.BORROWED


def within_limit(problem: Problem, pool: Pool, req: Request) -> bool:
    q = quota_of(problem, req.tenant, req.gpu_class)
    return pool.used[req.tenant] + req.gpus <= q.limit


def eligible(problem: Problem, req: Request) -> bool:
    """May start now as far as the request itself says (not before ``not_before``;
    a non-preemptible request only inside its guarantee is checked by the caller)."""
    return req.not_before is None or req.not_before <= problem.now


def start_now(
    problem: Problem, req: Request, alloc: Allocation, kind: ReservationKind
) -> Assignment:
    return Assignment(req.id, alloc, problem.now, problem.now + req.duration_s, kind)


def busy(req: Request, detail: str) -> Unplaced:
    return Unplaced(req.id, Reason.CAPACITY_BUSY, detail)


def over_limit(req: Request) -> Unplaced:
    return Unplaced(
        req.id,
        Reason.QUOTA_EXHAUSTED,
        "the tenant's limit is in use",
        blocking=(("quota", "limit"),),
    )


def gpu_classes(requests: Iterable[Request]) -> list[str]:
    return sorted({r.gpu_class for r in requests})


def finish(
    name: str,
    assignments: dict[int, Assignment],
    unplaced: dict[int, Unplaced],
    t0: float,
    preemptions: tuple[solver.Preemption, ...] = (),
) -> solver.Plan:
    return solver.Plan(
        assignments=assignments,
        unplaced=unplaced,
        preemptions=preemptions,
        status="FEASIBLE",
        planner=name,
        objective=float(len(assignments)),
        solve_time_s=time.perf_counter() - t0,
    )
