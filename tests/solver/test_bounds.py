"""Bound consistency: the CP-SAT model is a relaxation of what the greedy ledger can plan (its
plan is a model solution with the same objective), the flow bound holds above every plan, and
regression instances keep ``greedy <= objective <= bound`` rather than fixed assignments."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from solver import Problem, SolverConfig, plan, validate
from solver.bench import generate, replan
from solver.cpsat.fluid import flow_bound
from tests.solver.model_helpers import prepare, solve
from tests.solver.strategies import problems

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(problems())
def test_the_greedy_plan_solves_the_model_with_the_same_objective(problem: Problem) -> None:
    prep = prepare(problem)
    total = 0.0
    for inst in prep.instances.values():
        if not inst.items or not inst.exact:
            continue
        got = solve(inst, fix_to=prep, seconds=5.0)
        assert got.status in ("OPTIMAL", "FEASIBLE"), inst.gpu_class
        total += got.objective
    if all(i.exact for i in prep.instances.values()):
        modelled = {it.req.id for inst in prep.instances.values() for it in inst.items}
        total -= sum(prep.weights.move(r) for r in problem.previous if r not in modelled)
        assert total == prep.greedy.objective


@SETTINGS
@given(problems())
def test_flow_bound_is_above_the_greedy_plan(problem: Problem) -> None:
    prep = prepare(problem)
    grid = prep.grid
    buckets = [grid.units(int(b)) for b in grid.bounds[: grid.n_starts]]
    for inst in prep.instances.values():
        if not inst.items or not inst.exact:
            continue  # the planner reports no bound for these
        ids = {it.req.id for it in inst.items}
        value = sum(
            prep.weights.placed(rid, a.start)
            for rid, a in prep.greedy.assignments.items()
            if rid in ids
        )
        bound = flow_bound(inst, buckets, problem.resolution_s)
        assert bound is None or bound >= value


@SETTINGS
@given(problems())
def test_cpsat_bound_is_above_both_plans(problem: Problem) -> None:
    result = plan(problem, SolverConfig(time_limit_s=0.5, workers=1))
    greedy = plan(problem, SolverConfig(planner="greedy"))
    assert result.objective >= greedy.objective
    if result.bound is not None:
        assert result.bound >= result.objective
        assert result.gap is not None and result.gap >= 0


@pytest.mark.parametrize("seed", [11, 12])
def test_regression_instances_stay_consistent(seed: int) -> None:
    problem = generate(gpus=96, pending=80, tenants=6, seed=seed)
    config = SolverConfig(time_limit_s=1.0, workers=1, seed=seed, relative_gap=0.0)
    first = plan(problem, config)
    greedy = plan(problem, SolverConfig(planner="greedy"))
    assert validate(problem, first) == [] and validate(problem, greedy) == []
    assert first.bound is not None
    assert greedy.objective <= first.objective <= first.bound
    again = replan(problem, first, seed, arrivals=8)
    second = plan(again, config)
    assert validate(again, second) == []
    assert second.bound is not None and second.objective <= second.bound
    assert set(second.assignments) | set(second.unplaced) == {r.id for r in again.requests}
