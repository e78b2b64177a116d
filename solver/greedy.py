"""Greedy list scheduling: place requests one at a time at their earliest feasible start.

Order: objective weight (entitled guaranteed demand first, then priority x fair share), then
submission time, then id. Each request takes the earliest start boundary at which a gang of
``gpus // gpus_per_node`` distinct nodes of its class has ``gpus_per_node`` GPUs free for the
whole duration, inside its window, its tenant's limit and budget. The reservation is
guaranteed when the tenant's guaranteed reservations still fit its guaranteed quota then,
borrowed otherwise (a non-preemptible request searches guaranteed starts only). An entitled
request that would wait may reclaim GPUs from running borrowed reservations of other tenants
that have run their minimum time, when the earlier start is worth more than the preemptions
(judged by the objective). Nodes are chosen best fit: previous nodes, then the fullest.

The same routine (:func:`place_in_order`) places requests in other orders for the CP-SAT
planner: a largest-first order, a whole-class model's start order, and what is left after
the neighbourhood search, around placements it keeps unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from solver.explain import explain, static_reason
from solver.grid import build_grid
from solver.ledger import Ledger, Placement
from solver.model import (
    Assignment,
    Plan,
    Preemption,
    Problem,
    Request,
    ReservationKind,
    Unplaced,
    allocation_of,
)
from solver.objective import Weights, score, weights_of


def greedy_order(problem: Problem, weights: Weights) -> list[Request]:
    """The principled order: promised starts first (earliest first), then objective weight,
    then first come first served."""
    return sorted(
        problem.requests,
        key=lambda r: (*_promise_key(problem, r), -weights.value[r.id], r.submitted_at, r.id),
    )


def _promise_key(problem: Problem, r: Request) -> tuple[int, int]:
    promised = problem.promised.get(r.id)
    return (0, promised) if promised is not None else (1, 0)


def packing_order(problem: Problem, weights: Weights) -> list[Request]:
    """Like :func:`greedy_order`, but within equal weight the most GPU-hours first, which
    packs better (small requests backfill around large ones); the CP-SAT planner's second
    list order. A tenant whose budget cannot cover all its requests in a class keeps first
    come, first served among them (the order decides which get funded), after the others.
    Promised starts come first, as in :func:`greedy_order`."""
    demand: dict[tuple[str, str], int] = {}
    for r in problem.requests:
        key = (r.tenant, r.gpu_class)
        demand[key] = demand.get(key, 0) + r.gpus * r.duration_s

    def short(r: Request) -> bool:
        quota = problem.tenants[r.tenant].quotas.get(r.gpu_class)
        budget = quota.budget_gpu_s if quota is not None else None
        return budget is not None and budget < demand[(r.tenant, r.gpu_class)]

    return sorted(
        problem.requests,
        key=lambda r: (
            *_promise_key(problem, r),
            -weights.value[r.id],
            0 if short(r) else -r.gpus * r.duration_s,
            r.submitted_at,
            r.id,
        ),
    )


def place_one(ledger: Ledger, req: Request, weights: Weights) -> Placement | None:
    """The best placement of ``req`` in the current ledger, or ``None``."""
    tenant = ledger.problem.tenants[req.tenant]
    quota = tenant.quotas[req.gpu_class]
    prev = ledger.problem.previous.get(req.id)
    prefer = frozenset(n for n, _ in prev.allocation) if prev else frozenset()
    can_guarantee = req.gpus <= quota.guaranteed
    best: Placement | None
    if req.preemptible:
        best = ledger.search(req, guaranteed=False, limit=quota.limit, prefer=prefer)
        if best is not None and can_guarantee and _guarantee_fits(ledger, req, best.slot):
            best = Placement(req, best.slot, best.nodes, ReservationKind.GUARANTEED)
    elif can_guarantee:
        best = ledger.search(
            req,
            guaranteed=True,
            limit=quota.limit,
            guaranteed_cap=quota.guaranteed,
            prefer=prefer,
        )
    else:
        return None
    entitled = req.id in weights.entitled or not req.preemptible
    if can_guarantee and entitled and ledger.reclaimable(req.gpu_class):
        first = ledger.grid.first_start_at_or_after(max(ledger.grid.now, req.not_before or 0))
        hi = best.slot if best is not None else None
        if hi is None or hi > first:
            alt = ledger.search(
                req,
                guaranteed=True,
                reclaim=True,
                hi=hi,
                limit=quota.limit,
                guaranteed_cap=quota.guaranteed,
                prefer=prefer,
            )
            if alt is not None and _worth(ledger, weights, req, alt, best):
                best = alt
    return best


def _guarantee_fits(ledger: Ledger, req: Request, slot: int) -> bool:
    quota = ledger.problem.tenants[req.tenant].quotas[req.gpu_class]
    _, guar = ledger.tenant_arrays(req.tenant, req.gpu_class)
    end = int(ledger.ends(req.duration_s)[slot])
    return int(guar[slot:end].max()) + req.gpus <= quota.guaranteed


def _worth(
    ledger: Ledger, weights: Weights, req: Request, alt: Placement, best: Placement | None
) -> bool:
    """Whether reclaiming to start at ``alt`` beats ``best`` by the objective."""
    bounds = ledger.grid.bounds
    gain = weights.placed(req.id, int(bounds[alt.slot]))
    if best is not None:
        gain -= weights.placed(req.id, int(bounds[best.slot]))
    runs = {r.request_id: r for r in ledger.problem.running}
    cost = sum(weights.preemption(runs[rid]) for rid in alt.preempt)
    return gain > cost


@dataclass
class Schedule:
    """A list-scheduling result: the plan and the ledger placements behind it (the CP-SAT
    planner re-commits some of them unchanged)."""

    plan: Plan
    placements: dict[int, Placement]


def place_in_order(
    problem: Problem,
    order: Sequence[Request],
    weights: Weights,
    *,
    planner: str,
    started: float | None = None,
    keep: Sequence[Placement] = (),
) -> Schedule:
    """Commit ``keep`` unchanged, then place ``order`` one by one at the earliest feasible
    start (greedy list scheduling); every request not in ``keep`` must be in ``order``."""
    started = time.perf_counter() if started is None else started
    ledger = Ledger(problem, build_grid(problem))
    assignments: dict[int, Assignment] = {}
    unplaced: dict[int, Unplaced] = {}
    preemptions: list[Preemption] = []
    placements: dict[int, Placement] = {}

    def book(pl: Placement) -> None:
        req = pl.req
        ledger.commit(pl)
        pool = ledger.pools[req.gpu_class]
        start = int(ledger.grid.bounds[pl.slot])
        assignments[req.id] = Assignment(
            req.id,
            allocation_of({pool.nodes[i]: req.gpus_per_node for i in pl.nodes}),
            start,
            start + req.duration_s,
            pl.kind,
        )
        preemptions.extend(Preemption(rid, start, req.tenant) for rid in pl.preempt)
        placements[req.id] = pl

    for pl in keep:
        book(pl)
    # A request that found no start fails the same way for every request of the same shape
    # until the ledger changes: a long queue of look-alikes past a full horizon is searched
    # and explained once per shape, not once per request.
    failed: dict[tuple[object, ...], Unplaced] = {}
    failed_at = ledger.version
    for req in order:
        why = static_reason(ledger, req)
        if why is not None:
            unplaced[req.id] = why
            continue
        if ledger.version != failed_at:
            failed.clear()
            failed_at = ledger.version
        key = _shape(req, weights)
        known = failed.get(key)
        if known is not None:
            unplaced[req.id] = replace(known, request_id=req.id)
            continue
        found = place_one(ledger, req, weights)
        if found is None:
            unplaced[req.id] = failed[key] = explain(ledger, req)
            continue
        book(found)
    plan = Plan(
        assignments=assignments,
        unplaced=unplaced,
        preemptions=tuple(preemptions),
        status="FEASIBLE",
        planner=planner,
    )
    return Schedule(_finish(problem, plan, weights, started), placements)


def _shape(req: Request, weights: Weights) -> tuple[object, ...]:
    """Everything :func:`place_one` and :func:`~solver.explain.explain` read of a request
    besides its id (its previous nodes only break ties between feasible placements)."""
    return (
        req.tenant,
        req.gpu_class,
        req.gpus,
        req.gpus_per_node,
        req.duration_s,
        req.not_before,
        req.deadline,
        req.preemptible,
        weights.value[req.id],  # with the entitlement bonus: entitled or not
    )


def _finish(problem: Problem, plan: Plan, weights: Weights, started: float) -> Plan:
    return Plan(
        assignments=plan.assignments,
        unplaced=plan.unplaced,
        preemptions=plan.preemptions,
        status=plan.status,
        planner=plan.planner,
        objective=float(score(problem, plan, weights)),
        bound=plan.bound,
        gap=plan.gap,
        solve_time_s=time.perf_counter() - started,
        notes=plan.notes,
    )


def schedule_greedy(problem: Problem, weights: Weights) -> Schedule:
    """The greedy schedule (plan and placements)."""
    started = time.perf_counter()
    order = greedy_order(problem, weights)
    return place_in_order(problem, order, weights, planner="greedy", started=started)


def plan_greedy(problem: Problem, weights: Weights | None = None) -> Plan:
    """The greedy plan of ``problem`` (no bound: greedy proves nothing)."""
    started = time.perf_counter()
    weights = weights or weights_of(problem)
    order = greedy_order(problem, weights)
    return place_in_order(problem, order, weights, planner="greedy", started=started).plan
