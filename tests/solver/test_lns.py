"""The node-level neighbourhood search: it finds what list scheduling misses, and whatever it
commits is valid and never worse."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings

from solver import Problem, SolverConfig, plan, validate
from solver.cpsat.lns import improve
from solver.explain import static_reason
from solver.greedy import greedy_order, place_in_order, schedule_greedy
from solver.grid import build_grid
from solver.ledger import Ledger
from solver.objective import weights_of
from tests.solver.factory import NOW, H, nodes, problem, req, tenant
from tests.solver.strategies import problems


def _lns(p: Problem, seconds: float) -> tuple[float, float, Problem, object]:
    weights = weights_of(p)
    sched = schedule_greedy(p, weights)
    grid = build_grid(p)
    ledger = Ledger(p, grid)
    eligible = [r for r in p.requests if static_reason(ledger, r) is None]
    result = improve(
        p,
        grid,
        weights,
        sched.placements,
        eligible,
        time.perf_counter() + seconds,
        1,
        0,
        step_s=0.5,
    )
    rest = [r for r in greedy_order(p, weights) if r.id not in result.placements]
    final = place_in_order(p, rest, weights, planner="cpsat", keep=list(result.placements.values()))
    return sched.plan.objective, final.plan.objective, p, final.plan


def _blocked_gang() -> Problem:
    # A long one-GPU job submitted first takes a node; greedy then makes the two-node gang
    # wait for it, while the gang first and the small job after it is far better.
    small = req(1, gpus=1, hours=20, submitted_at=NOW - 500)
    gang = req(2, gpus=16, per_node=8, hours=2, submitted_at=NOW - 100)
    return problem(nodes(2), [tenant("a")], [small, gang])


def test_neighbourhood_search_moves_the_blocking_job() -> None:
    before, after, p, final = _lns(_blocked_gang(), 2.0)
    assert validate(p, final) == []  # type: ignore[arg-type]
    assert after > before
    assert final.assignments[2].start == NOW  # type: ignore[attr-defined]
    assert final.assignments[1].start == NOW + 2 * H  # type: ignore[attr-defined]


def test_cpsat_planner_beats_greedy_on_the_blocked_gang() -> None:
    p = _blocked_gang()
    greedy = plan(p, SolverConfig(planner="greedy"))
    best = plan(p, SolverConfig(time_limit_s=3.0, workers=1))
    assert validate(p, best) == []
    assert best.objective > greedy.objective
    assert best.bound is not None and best.objective <= best.bound


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_neighbourhood_search_keeps_plans_valid_and_never_worse(p: Problem) -> None:
    before, after, problem_, final = _lns(p, 0.4)
    assert validate(problem_, final) == []  # type: ignore[arg-type]
    assert after >= before


def test_search_stops_early_when_nothing_is_left_to_try() -> None:
    p = _blocked_gang()
    weights = weights_of(p)
    sched = schedule_greedy(p, weights)
    grid = build_grid(p)
    eligible = list(p.requests)
    result = improve(p, grid, weights, sched.placements, eligible, time.perf_counter() + 60.0, 1, 0)
    # One improving step, then at most three tries around each request still delayed.
    assert result.improved >= 1
    assert result.steps <= 1 + 3 * len(eligible)


def test_a_small_class_is_proven_optimal() -> None:
    config = SolverConfig(time_limit_s=10.0, workers=1, relative_gap=0.0)
    best = plan(_blocked_gang(), config)
    assert best.status == "OPTIMAL" and best.gap == 0
