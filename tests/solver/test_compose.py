"""Per-class composition of two plans: valid, and at least as good as either."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from solver import Problem, validate
from solver.cpsat.whole import per_class_best
from solver.greedy import greedy_order, packing_order, place_in_order
from solver.objective import score, weights_of
from tests.solver.strategies import problems


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_per_class_best_is_valid_and_no_worse(problem: Problem) -> None:
    weights = weights_of(problem)
    fifo = place_in_order(problem, greedy_order(problem, weights), weights, planner="a")
    packed = place_in_order(problem, packing_order(problem, weights), weights, planner="b")
    best = per_class_best(problem, weights, fifo, packed)
    assert validate(problem, best.plan) == []
    assert best.plan.objective == score(problem, best.plan)
    assert best.plan.objective >= max(fifo.plan.objective, packed.plan.objective)
    assert set(best.placements) == set(best.plan.assignments)
