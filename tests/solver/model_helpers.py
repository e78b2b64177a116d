"""Build and solve the CP-SAT class model directly, for model-level tests."""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from solver import Plan, Problem
from solver.cpsat.builders import build_model
from solver.cpsat.instance import ClassInstance, build_instances
from solver.cpsat.whole import hint as _hint
from solver.explain import static_reason
from solver.greedy import plan_greedy
from solver.grid import TimeGrid, build_grid
from solver.ledger import Ledger
from solver.objective import Weights, weights_of


@dataclass
class Prepared:
    grid: TimeGrid
    weights: Weights
    greedy: Plan
    instances: dict[str, ClassInstance]


def prepare(problem: Problem) -> Prepared:
    weights = weights_of(problem)
    grid = build_grid(problem)
    ledger = Ledger(problem, grid)
    eligible = [r for r in problem.requests if static_reason(ledger, r) is None]
    instances = build_instances(problem, grid, ledger, weights, eligible)
    return Prepared(grid, weights, plan_greedy(problem, weights), instances)


@dataclass
class Solved:
    status: str
    objective: float
    starts: dict[int, int]  # request id -> start unit, for present items
    preempted: dict[int, bool]  # running request id -> ended early


def solve(inst: ClassInstance, *, fix_to: Prepared | None = None, seconds: float = 5.0) -> Solved:
    """Solve the model of ``inst`` (to optimality on tiny instances); with ``fix_to``, only
    check that its greedy plan is a solution."""
    m, v = build_model(inst)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 1
    if fix_to is not None:
        _hint(m, inst, v, fix_to.greedy, fix_to.grid)
        solver.parameters.fix_variables_to_their_hinted_value = True
    status = solver.solve(m)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Solved(name, float("nan"), {}, {})
    starts = {
        it.req.id: solver.value(iv.start)
        for it, iv in zip(inst.items, v.items, strict=True)
        if solver.boolean_value(iv.present)
    }
    pre = {
        t.run.request_id: solver.boolean_value(tv.preempted)
        for t, tv in zip(inst.tails, v.tails, strict=True)
    }
    return Solved(name, solver.objective_value, starts, pre)
