"""The planners' entry points: :func:`plan` and :func:`validate`."""

from __future__ import annotations

from dataclasses import dataclass

from solver.greedy import plan_greedy
from solver.model import Plan, Problem
from solver.validate import Violation, check_plan


@dataclass(frozen=True, slots=True)
class SolverConfig:
    """How to plan: which planner, and for CP-SAT its time limit, workers and target gap."""

    planner: str = "greedy"
    time_limit_s: float = 5.0
    workers: int = 2
    relative_gap: float = 0.01
    seed: int = 0


def plan(problem: Problem, config: SolverConfig | None = None) -> Plan:
    """Plan ``problem`` with the configured planner."""
    config = config or SolverConfig()
    if config.planner != "greedy":
        raise ValueError(f"unknown planner {config.planner!r}")
    return plan_greedy(problem)


def validate(problem: Problem, plan: Plan) -> list[Violation]:
    """Every rule ``plan`` breaks for ``problem`` (empty when the plan is valid)."""
    return check_plan(problem, plan)
