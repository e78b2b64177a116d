"""Property tests: no plan from any planner ever breaks a rule, and the reported objective is
the shared objective function's value."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from solver import Problem, SolverConfig, plan, validate
from solver.objective import score
from tests.solver.conftest import PLANNERS
from tests.solver.strategies import problems

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(problems())
def test_every_planner_returns_a_valid_complete_plan(problem: Problem) -> None:
    for planner in PLANNERS:
        config = SolverConfig(planner=planner, time_limit_s=0.5, workers=1, relative_gap=0.0)
        result = plan(problem, config)
        assert validate(problem, result) == [], planner
        assert set(result.assignments) | set(result.unplaced) == {r.id for r in problem.requests}
        assert result.objective == score(problem, result)
        for u in result.unplaced.values():
            assert u.detail, u
