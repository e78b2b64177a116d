"""One scheduling cycle, in named phases: advance → snapshot → solve → validate → apply.

``advance`` closes windows that have passed; ``snapshot`` reads the state in one transaction
into an immutable :class:`~scheduler.snapshot.Snapshot`; ``solve`` and ``validate`` are pure
(the solver package); ``apply`` writes with optimistic concurrency, in short transactions
(:func:`scheduler.intents.split`: each leaves a valid stored plan). A plan that fails
validation is never applied: the cycle falls back to the greedy planner, and if that plan
fails too, applies nothing and says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

import solver
from scheduler import apply as apply_phase
from scheduler import fairshare, intents, lifecycle
from scheduler import snapshot as snapshot_phase
from scheduler.clock import Clock
from scheduler.db import session_scope
from scheduler.settings import Settings
from scheduler.tables import CycleRunRow

log = logging.getLogger(__name__)

#: New planned reservations per write transaction (about 10 ms of SQLite's write lock).
APPLY_PART = 100
#: Before each part, writes already waiting (submits, cancels) go first, for at most this long.
APPLY_DEFER_S = 0.1


@dataclass
class CycleResult:
    started_at: datetime
    planner: str = ""
    status: str = ""
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    requests: int = 0
    placed: int = 0
    violations: list[str] = field(default_factory=list)
    fallback: str | None = None
    error: str | None = None
    applied: apply_phase.Applied = field(default_factory=apply_phase.Applied)
    timings: dict[str, float] = field(default_factory=dict)
    next_event: datetime | None = None


def solver_config(settings: Settings) -> solver.SolverConfig:
    return solver.SolverConfig(
        planner=settings.solver,
        time_limit_s=settings.solver_time_limit_s,
        workers=settings.solver_workers,
    )


PlanFn = Callable[[solver.Problem, solver.SolverConfig], solver.Plan]


def decide(
    problem: solver.Problem, config: solver.SolverConfig, plan_fn: PlanFn = solver.plan
) -> tuple[solver.Plan, list[str], str | None]:
    """Plan and validate; fall back to greedy when the configured planner's plan is invalid.

    Returns the plan to apply (or an empty one if no valid plan exists), the violations found
    in the first plan, and why a fallback happened.
    """
    try:
        first = plan_fn(problem, config)
    except solver.ProblemError as exc:
        # The snapshot should never build such a problem; refuse rather than guess.
        log.error("the planner refused the problem: %s", exc)
        empty = solver.Plan(assignments={}, unplaced={}, status="REFUSED", planner="none")
        return empty, [], f"malformed problem: {exc}"
    violations = solver.validate(problem, first)
    if not violations:
        return first, [], None
    why = f"{first.planner} plan broke {len(violations)} rule(s): {violations[0]}"
    log.error("refusing plan: %s", why)
    if config.planner != "greedy" or plan_fn is not solver.plan:
        fallback = solver.plan(problem, solver.SolverConfig(planner="greedy"))
        again = solver.validate(problem, fallback)
        if not again:
            return fallback, [str(v) for v in violations], why
        why += f"; greedy fallback broke {len(again)} rule(s): {again[0]}"
        log.error("greedy fallback refused too: %s", again[0])
    empty = solver.Plan(assignments={}, unplaced={}, status="REFUSED", planner="none")
    return empty, [str(v) for v in violations], why


def _cycle_row(result: CycleResult, violations: int, fallback: str | None) -> CycleRunRow:
    return CycleRunRow(
        started_at=result.started_at,
        planner=result.planner,
        status=result.status,
        objective=result.objective,
        bound=result.bound,
        gap=result.gap,
        requests=result.requests,
        placed=result.placed,
        activated=result.applied.activated,
        preempted=result.applied.preempted,
        rejected=result.applied.rejected,
        stale=result.applied.stale,
        violations=violations,
        fallback=fallback,
        error=result.error,
        advance_s=result.timings["advance"],
        snapshot_s=result.timings["snapshot"],
        solve_s=result.timings["solve"],
        validate_s=result.timings["validate"],
        apply_s=result.timings["apply"],
    )


class NotLeader(RuntimeError):
    """This replica does not hold the leader lease (any more): the cycle wrote nothing more
    (parts of its apply already committed are a valid stored plan)."""


Fence = Callable[[Session], bool]


def _check(fence: Fence | None, session: Session) -> None:
    if fence is not None and not fence(session):
        raise NotLeader("the leader lease is held by another replica")


def run_cycle(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    *,
    fence: Fence | None = None,
    plan_fn: PlanFn = solver.plan,
) -> CycleResult:
    """Run one cycle now and record it. ``fence`` is checked inside each write transaction;
    when it fails, the transaction rolls back and :class:`NotLeader` is raised. ``plan_fn``
    is the planning policy (the simulator swaps in baseline policies; the server never does)."""
    result = CycleResult(started_at=clock.now())
    t0 = time.perf_counter()
    with session_scope(engine) as session:
        _check(fence, session)
        now = clock.now()
        apply_phase.close_ended(session, now)
        fairshare.accrue(session, now, settings.fair_share_half_life_s)
    t1 = time.perf_counter()
    with session_scope(engine, write=False) as session:
        snap = snapshot_phase.take(session, clock.now(), settings)
    t2 = time.perf_counter()
    config = solver_config(settings)
    plan, violations, fallback = decide(snap.problem, config, plan_fn)
    t3 = time.perf_counter()
    result.timings = {"advance": t1 - t0, "snapshot": t2 - t1, "decide": t3 - t2}
    result.planner, result.status = plan.planner, plan.status
    result.objective, result.bound, result.gap = plan.objective, plan.bound, plan.gap
    result.requests = len(snap.problem.requests)
    result.placed = len(plan.assignments)
    result.violations, result.fallback = violations, fallback
    result.timings["solve"] = plan.solve_time_s
    result.timings["validate"] = max(0.0, result.timings["decide"] - plan.solve_time_s)
    if plan.status == "REFUSED":
        result.error = fallback
    # The writes are decided before the write transactions, which then only check versions
    # and send them: on SQLite every other writer waits while one runs, so the new planned
    # reservations go in parts of APPLY_PART (each part leaves a valid stored plan).
    now = clock.now()
    parts: list[intents.Prepared | None] = [None]  # a refused plan writes only its record
    if plan.status != "REFUSED":
        parts = [*intents.split(intents.prepare(snap, plan, now), APPLY_PART)]

    def record(session: Session) -> None:
        result.timings["apply"] = time.perf_counter() - t3
        session.add(_cycle_row(result, len(violations), fallback))

    for i, part in enumerate(parts, start=1):
        try:
            with session_scope(engine, defer_s=APPLY_DEFER_S) as session:
                _check(fence, session)
                if part is not None:
                    with lifecycle.buffered_events(session):
                        applied = apply_phase.apply_plan(session, part)
                    result.applied = apply_phase.merge(result.applied, applied)
                if i == len(parts):  # the last transaction records the cycle
                    record(session)
        except apply_phase.Extended as exc:
            log.warning("apply stopped after %d of %d parts: %s", i - 1, len(parts), exc)
            result.error = str(exc)
            with session_scope(engine) as session:
                _check(fence, session)
                record(session)
            break
    with session_scope(engine, write=False) as session:
        result.next_event = apply_phase.next_event(session, now)
    t = result.timings
    log.info(
        "cycle: %d waiting, %d placed, %d opened, %d preempted, %d stale in %.3fs "
        "(snapshot %.3fs, plan %.3fs, apply %.3fs; %s %s)",
        result.requests,
        result.placed,
        result.applied.activated,
        result.applied.preempted,
        result.applied.stale,
        t["advance"] + t["snapshot"] + t["decide"] + t["apply"],
        t["snapshot"],
        t["decide"],
        t["apply"],
        result.planner,
        result.status,
    )
    return result
