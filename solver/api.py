"""The planners' entry points: :func:`plan` and :func:`validate`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from solver.checks import check_problem
from solver.cpsat.run import CpsatOptions, plan_cpsat
from solver.greedy import plan_greedy
from solver.model import Plan, Problem
from solver.promises import broken, promised_starts, with_promises
from solver.validate import Violation, check_plan

PLANNERS = ("greedy", "cpsat")


@dataclass(frozen=True, slots=True)
class SolverConfig:
    """How to plan: which planner, and for CP-SAT its time limit, workers and target gap."""

    planner: str = "cpsat"
    time_limit_s: float = 5.0
    workers: int = 2
    relative_gap: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.planner not in PLANNERS:
            raise ValueError(f"planner: must be one of {', '.join(PLANNERS)}, got {self.planner!r}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s: must be positive, got {self.time_limit_s}")
        if self.workers < 1:
            raise ValueError(f"workers: must be at least 1, got {self.workers}")
        if not 0 <= self.relative_gap < 1:
            raise ValueError(f"relative_gap: must be in [0, 1), got {self.relative_gap}")


# Rounds of dropping promises that cannot be kept any more before planning without any.
PROMISE_ROUNDS = 2


def plan(problem: Problem, config: SolverConfig | None = None) -> Plan:
    """Plan ``problem`` with the configured planner (raises ``ProblemError`` on bad input).

    Starts promised on guaranteed quota are kept or moved earlier (:mod:`solver.promises`):
    the planner runs with them as hard limits; promises it cannot keep are dropped and the
    planner runs again (with half the time) without them.
    """
    config = config or SolverConfig()
    check_problem(problem)
    promises = promised_starts(problem)
    result = _run(with_promises(problem, promises), config)
    for _ in range(PROMISE_ROUNDS):
        lost = broken(result, promises)
        if not lost:
            return result
        for rid in lost:
            del promises[rid]
        config = replace(config, time_limit_s=config.time_limit_s / 2)
        again = _run(with_promises(problem, promises), config)
        result = replace(again, notes=(*again.notes, f"promises not kept: {len(lost)}"))
    return result if not broken(result, promises) else _run(problem, config)


def _run(problem: Problem, config: SolverConfig) -> Plan:
    if config.planner == "greedy":
        return plan_greedy(problem)
    options = CpsatOptions(config.time_limit_s, config.workers, config.relative_gap, config.seed)
    return plan_cpsat(problem, options)


def validate(problem: Problem, plan: Plan) -> list[Violation]:
    """Every rule ``plan`` breaks for ``problem`` (empty when the plan is valid)."""
    return check_plan(problem, plan)
