"""Promised starts on guaranteed quota: kept or moved earlier, dropped only when forced."""

from __future__ import annotations

from collections.abc import Callable

from solver import Plan, Problem, ReservationKind, Running
from solver.model import Assignment
from solver.promises import promised_starts
from tests.solver.factory import NOW, H, nodes, problem, req, tenant

Solve = Callable[[Problem], Plan]

G = ReservationKind.GUARANTEED


def busy_until(hours: float, tenant_name: str = "c") -> Running:
    """Node n0 held by other work until ``NOW + hours``."""
    return Running(99, tenant_name, "H100", (("n0", 8),), NOW - H, NOW + int(hours * H), G)


def setup(**kw: object) -> Problem:
    """One node busy for an hour; ``a`` has a guaranteed request, ``b`` an urgent one (the
    guarantees are overcommitted, as an operator may do)."""
    tenants = [tenant("a", 8, 8), tenant("b", 8, 8), tenant("c", 8, 8)]
    requests = [req(1, "a"), req(2, "b", priority=10), *kw.pop("extra", [])]  # type: ignore[misc]
    return problem(nodes(1), tenants, requests, [kw.pop("running", busy_until(1))], **kw)


def test_without_a_promise_the_urgent_request_goes_first(solve: Solve) -> None:
    # The counterfactual that makes the next test meaningful: left to the objective, b's
    # high-priority request takes the hour at which a's request was promised.
    result = solve(setup())
    assert result.assignments[2].start == NOW + H
    assert result.assignments[1].start == NOW + 2 * H


def test_a_guaranteed_promise_is_kept_against_a_more_valuable_arrival(solve: Solve) -> None:
    prev = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, G)
    result = solve(setup(previous={1: prev}))
    assert result.assignments[1].start == NOW + H
    assert result.assignments[2].start == NOW + 2 * H


def test_a_promise_that_cannot_be_kept_moves_later_instead_of_failing(solve: Solve) -> None:
    # The node's current work was extended to two hours: the promise is broken by force,
    # and the request is planned at the first start that remains.
    prev = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, G)
    p = setup(previous={1: prev}, running=busy_until(2))
    result = solve(p)
    assert result.assignments[1].start >= NOW + 2 * H
    assert "promises not kept: 1" in result.notes


def test_the_tenants_own_urgent_request_may_take_the_promised_slot(solve: Solve) -> None:
    prev = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, G)
    urgent = req(3, "a", priority=20)
    p = setup(previous={1: prev}, extra=[urgent])
    assert promised_starts(p) == {}
    result = solve(p)
    assert result.assignments[3].start < result.assignments[1].start


def test_borrowed_starts_make_no_promise_and_overdue_ones_mean_now() -> None:
    borrowed = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, ReservationKind.BORROWED)
    assert promised_starts(setup(previous={1: borrowed})) == {}
    past = Assignment(1, (("n0", 8),), NOW - 60, NOW + H, G)
    assert promised_starts(setup(previous={1: past})) == {1: NOW}  # overdue: start now
    kept = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, G)
    assert promised_starts(setup(previous={1: kept})) == {1: NOW + H}


def test_a_stored_promise_survives_an_earlier_borrowed_plan(solve: Solve) -> None:
    # The last plan started the request earlier on borrowed GPUs; the scheduler still holds
    # the guaranteed promise, so the urgent arrival cannot push it past that.
    borrowed = Assignment(1, (("n0", 8),), NOW + H, NOW + 2 * H, ReservationKind.BORROWED)
    result = solve(setup(previous={1: borrowed}, promised={1: NOW + H}))
    assert result.assignments[1].start == NOW + H
    assert promised_starts(setup(previous={1: borrowed})) == {}
