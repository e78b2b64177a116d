"""Shared fixtures: every rule test runs against each planner."""

from __future__ import annotations

import pytest

from solver import Plan, Problem, SolverConfig, plan, validate

PLANNERS = ("greedy", "cpsat")


@pytest.fixture(params=PLANNERS)
def solve(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Plan with one planner and assert the validator accepts the plan."""
    planner = request.param

    def run(problem: Problem) -> Plan:
        result = plan(problem, SolverConfig(planner=planner, time_limit_s=2.0, workers=1))
        assert validate(problem, result) == []
        assert set(result.assignments) | set(result.unplaced) == {r.id for r in problem.requests}
        return result

    return run
