"""CP-SAT on a whole GPU class at once, over pooled capacity (:mod:`solver.cpsat.builders`).

Used for small classes, where the model solves quickly: its bound (a bound for every plan the
ledger can make, since the model relaxes only node boundaries) can beat the flow bound, and its
solution, realised by the list scheduler in the model's start order, can beat greedy. Classes
share nothing, so each class keeps whichever of the two plans scores better for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from solver.cpsat.builders import ModelVars, build_model
from solver.cpsat.instance import ClassInstance
from solver.greedy import Schedule, greedy_order, place_in_order
from solver.grid import TimeGrid
from solver.model import Plan, Problem, Request, ReservationKind
from solver.objective import Weights, score


@dataclass
class ClassResult:
    """What the model of one class found."""

    gpu_class: str
    status: str
    objective: float | None
    bound: float | None
    hint_objective: float
    order: list[tuple[int, int, int]]  # (start unit, -coefficient, request id), placed items
    wall_s: float

    @property
    def improved(self) -> bool:
        return self.objective is not None and self.objective > self.hint_objective


def hint(
    m: cp_model.CpModel, inst: ClassInstance, v: ModelVars, plan: Plan, grid: TimeGrid
) -> float:
    """Hint ``plan`` (a ledger plan, hence a solution of the model); returns its objective."""
    pre_at = {p.request_id: grid.units(p.at) for p in plan.preemptions}
    h = inst.horizon_units
    value = float(v.constant)
    for it, iv in zip(inst.items, v.items, strict=True):
        a = plan.assignments.get(it.req.id)
        placed = a is not None and grid.units(a.start) in it.domain
        s = grid.units(a.start) if a is not None and placed else it.domain[0]
        m.add_hint(iv.present, placed)
        m.add_hint(iv.start, s)
        m.add_hint(iv.earliness, h - s if placed else 0)
        if placed:
            value += it.coef * (h - s)
        if iv.guaranteed is not None:
            guaranteed = placed and a is not None and a.kind is ReservationKind.GUARANTEED
            m.add_hint(iv.guaranteed, guaranteed)
        if iv.same is not None:
            same = placed and s == it.prev_unit
            m.add_hint(iv.same, same)
            value += it.move if same else 0
    for t, tv in zip(inst.tails, v.tails, strict=True):
        at = pre_at.get(t.run.request_id)
        end = t.end if at is None else min(max(at, t.start), t.end)
        m.add_hint(tv.end, end)
        m.add_hint(tv.preempted, end < t.end)
        value -= t.penalty if end < t.end else 0
    return value


def solve_class(
    inst: ClassInstance, plan: Plan, grid: TimeGrid, time_limit_s: float, workers: int, seed: int
) -> ClassResult:
    """Build, hint and solve the model of one class."""
    t0 = time.perf_counter()
    m, v = build_model(inst)
    hint_value = hint(m, inst, v, plan, grid)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.02, time_limit_s - (time.perf_counter() - t0))
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    status = solver.solve(m)
    objective = bound = None
    order: list[tuple[int, int, int]] = []
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        objective = solver.objective_value
        bound = solver.best_objective_bound
        for it, iv in zip(inst.items, v.items, strict=True):
            if solver.boolean_value(iv.present):
                order.append((solver.value(iv.start), -it.coef, it.req.id))
    return ClassResult(
        inst.gpu_class,
        solver.status_name(status),
        objective,
        bound,
        hint_value,
        sorted(order),
        time.perf_counter() - t0,
    )


def realise(
    problem: Problem,
    weights: Weights,
    base: Schedule,
    results: list[ClassResult],
    started: float,
) -> Schedule:
    """Keep ``base``'s placements in classes no model improved; place the improved classes'
    requests in their model's start order, then everything else in greedy order."""
    improved = {r.gpu_class for r in results if r.improved}
    keep = [pl for pl in base.placements.values() if pl.req.gpu_class not in improved]
    by_id = {r.id: r for r in problem.requests}
    head: list[Request] = [by_id[rid] for r in results if r.improved for _, _, rid in r.order]
    head.sort(key=lambda q: next(s for r in results for s, _, i in r.order if i == q.id))
    taken = {pl.req.id for pl in keep} | {q.id for q in head}
    rest = [q for q in greedy_order(problem, weights) if q.id not in taken]
    return place_in_order(
        problem, head + rest, weights, planner="cpsat", started=started, keep=keep
    )


def per_class_best(problem: Problem, weights: Weights, a: Schedule, b: Schedule) -> Schedule:
    """Per GPU class the better of two schedules by the objective (classes share no nodes,
    quotas or running work, so their parts combine into a valid plan)."""
    run_cls = {r.request_id: r.gpu_class for r in problem.running}

    def by_class(s: Schedule) -> dict[str, int]:
        out: dict[str, int] = {}
        for req in problem.requests:
            got = s.plan.assignments.get(req.id)
            v = weights.placed(req.id, got.start) if got is not None else 0
            prev = problem.previous.get(req.id)
            if prev is not None and (got is None or got.start != prev.start):
                v -= weights.move(req.id)
            out[req.gpu_class] = out.get(req.gpu_class, 0) + v
        runs = {r.request_id: r for r in problem.running}
        for p in s.plan.preemptions:
            c = run_cls[p.request_id]
            out[c] = out.get(c, 0) - weights.preemption(runs[p.request_id])
        return out

    va, vb = by_class(a), by_class(b)
    from_b = {c for c in vb if vb[c] > va.get(c, 0)}
    if not from_b:
        return a

    def pick(cls: str) -> Schedule:
        return b if cls in from_b else a

    assignments = {}
    unplaced = {}
    placements = {}
    for req in problem.requests:
        src = pick(req.gpu_class)
        if req.id in src.plan.assignments:
            assignments[req.id] = src.plan.assignments[req.id]
            placements[req.id] = src.placements[req.id]
        else:
            unplaced[req.id] = src.plan.unplaced[req.id]
    preemptions = tuple(
        p for s in (a, b) for p in s.plan.preemptions if pick(run_cls[p.request_id]) is s
    )
    plan = Plan(
        assignments=assignments,
        unplaced=unplaced,
        preemptions=preemptions,
        planner="cpsat",
    )
    plan = Plan(
        assignments=assignments,
        unplaced=unplaced,
        preemptions=preemptions,
        planner="cpsat",
        objective=float(score(problem, plan, weights)),
    )
    return Schedule(plan, placements)
