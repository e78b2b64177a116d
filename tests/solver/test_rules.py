"""Per-rule tests on tiny instances, for every planner: what must be placed is placed where
the rule allows, and what cannot be placed gets the right reason and blockers."""

from __future__ import annotations

from collections.abc import Callable

from solver import Node, Plan, Problem, Quota, Reason, ReservationKind, Running, Tenant
from solver.model import Assignment
from tests.solver.factory import NOW, H, nodes, problem, req, tenant

Solve = Callable[[Problem], Plan]


def starts(result: Plan) -> dict[int, int]:
    return {rid: a.start - NOW for rid, a in result.assignments.items()}


# -- capacity -------------------------------------------------------------------------------


def test_capacity_queues_the_third_job_behind_two_nodes(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a")], [req(i, hours=1) for i in range(3)])
    result = solve(p)
    assert sorted(starts(result).values()) == [0, 0, H]


def test_small_jobs_share_a_node(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a")], [req(i, gpus=2) for i in range(4)])
    result = solve(p)
    assert set(starts(result).values()) == {0}
    assert {a.allocation for a in result.assignments.values()} == {(("n0", 2),)}


def test_best_fit_keeps_a_whole_node_free(solve: Solve) -> None:
    run = Running(99, "b", "H100", (("n1", 4),), NOW - H, NOW + 10 * H, ReservationKind.GUARANTEED)
    p = problem(nodes(2), [tenant("a"), tenant("b", 8, 8)], [req(1, gpus=4)], [run])
    result = solve(p)
    assert result.assignments[1].allocation == (("n1", 4),)


# -- gang -----------------------------------------------------------------------------------


def test_gang_takes_distinct_nodes_and_starts_together(solve: Solve) -> None:
    p = problem(nodes(3), [tenant("a")], [req(1, gpus=12, per_node=4)])
    result = solve(p)
    a = result.assignments[1]
    assert len(a.allocation) == 3 and all(g == 4 for _, g in a.allocation)


def test_gang_larger_than_the_pool_is_too_large(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a")], [req(1, gpus=24, per_node=8)])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.TOO_LARGE_FOR_POOL


def test_gang_needing_draining_nodes_names_them(solve: Solve) -> None:
    pool = (Node("n0", "H100", 8), Node("n1", "H100", 8, schedulable=False))
    p = problem(pool, [tenant("a")], [req(1, gpus=16, per_node=8)])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.NODES_DRAINING
    assert u.blocking == (("node", "n1"),)


def test_unknown_class_is_reported(solve: Solve) -> None:
    t = Tenant("a", {"H100": Quota(0, 8), "B200": Quota(0, 8)})
    p = problem(nodes(1), [t], [req(1, cls="B200")])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.NO_SUCH_GPU_CLASS and u.blocking == (("class", "B200"),)


def test_draining_node_takes_no_new_work(solve: Solve) -> None:
    pool = (Node("n0", "H100", 8, schedulable=False), Node("n1", "H100", 8))
    p = problem(pool, [tenant("a")], [req(1), req(2)])
    result = solve(p)
    assert {a.allocation for a in result.assignments.values()} == {(("n1", 8),)}
    assert sorted(starts(result).values()) == [0, H]


# -- windows --------------------------------------------------------------------------------


def test_not_before_is_respected(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a")], [req(1, not_before=NOW + 2 * H + 17)])
    assert starts(solve(p))[1] >= 2 * H + 17


def test_deadline_that_no_start_can_meet(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a")], [req(1, hours=2, deadline=NOW + H)])
    assert solve(p).unplaced[1].reason is Reason.DEADLINE_UNREACHABLE


def test_deadline_missed_because_the_gpus_are_busy(solve: Solve) -> None:
    run = Running(99, "b", "H100", (("n0", 8),), NOW - H, NOW + 3 * H, ReservationKind.GUARANTEED)
    p = problem(nodes(1), [tenant("a"), tenant("b", 8, 8)], [req(1, deadline=NOW + 2 * H)], [run])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.DEADLINE_UNREACHABLE
    assert ("tenant", "b") in u.blocking
    assert u.earliest_start == NOW + 3 * H


def test_deadline_met_by_the_earliest_start(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a")], [req(1, hours=2, deadline=NOW + 2 * H)])
    assert starts(solve(p))[1] == 0


def test_start_beyond_the_horizon(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a")], [req(1, not_before=NOW + 9 * 24 * H)])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.BEYOND_HORIZON and u.earliest_start is not None


# -- limit ----------------------------------------------------------------------------------


def test_limit_serialises_a_tenants_jobs(solve: Solve) -> None:
    p = problem(nodes(4), [tenant("a", 0, 8)], [req(1), req(2)])
    assert sorted(starts(solve(p)).values()) == [0, H]


def test_request_over_the_limit(solve: Solve) -> None:
    p = problem(nodes(4), [tenant("a", 0, 8)], [req(1, gpus=16)])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.QUOTA_EXHAUSTED and u.blocking == (("quota", "limit"),)


def test_no_quota_for_the_class(solve: Solve) -> None:
    p = problem(nodes(1) + nodes(1, cls="A100", prefix="m"), [tenant("a")], [req(1, cls="A100")])
    assert solve(p).unplaced[1].reason is Reason.QUOTA_EXHAUSTED


def test_limit_filled_by_own_running_work_for_the_horizon(solve: Solve) -> None:
    run = Running(99, "a", "H100", (("n0", 8),), NOW - H, NOW + 5 * H, ReservationKind.BORROWED)
    p = problem(nodes(2), [tenant("a", 0, 8)], [req(1)], [run], horizon_s=2 * H)
    u = solve(p).unplaced[1]
    assert u.reason is Reason.QUOTA_EXHAUSTED
    assert ("quota", "limit") in u.blocking
    assert u.earliest_start == NOW + 5 * H


# -- guarantees and reclaim -----------------------------------------------------------------


def test_guaranteed_then_borrowed(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a", 8, 16)], [req(1), req(2)])
    result = solve(p)
    kinds = sorted(a.kind for a in result.assignments.values())
    assert kinds == [ReservationKind.BORROWED, ReservationKind.GUARANTEED]
    assert set(starts(result).values()) == {0}


def test_non_preemptible_waits_for_guaranteed_room(solve: Solve) -> None:
    run = Running(99, "a", "H100", (("n0", 8),), NOW - H, NOW + 2 * H, ReservationKind.GUARANTEED)
    p = problem(nodes(2), [tenant("a", 8, 16)], [req(1, preemptible=False)], [run])
    result = solve(p)
    assert starts(result)[1] == 2 * H
    assert result.assignments[1].kind is ReservationKind.GUARANTEED


def test_non_preemptible_without_guarantee(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a", 0, 16)], [req(1, preemptible=False)])
    u = solve(p).unplaced[1]
    assert u.reason is Reason.NOT_PREEMPTIBLE_NO_GUARANTEE


def _borrower(started_ago: int, *, kind: ReservationKind = ReservationKind.BORROWED) -> Running:
    return Running(99, "b", "H100", (("n0", 8),), NOW - started_ago, NOW + 20 * H, kind)


def test_guaranteed_demand_reclaims_a_borrower(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a", 8, 8), tenant("b", 0, 8)], [req(1)], [_borrower(H)])
    result = solve(p)
    assert starts(result)[1] == 0
    assert result.assignments[1].kind is ReservationKind.GUARANTEED
    (pre,) = result.preemptions
    assert (pre.request_id, pre.at, pre.for_tenant) == (99, NOW, "a")


def test_reclaim_waits_for_the_minimum_runtime(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a", 8, 8), tenant("b", 0, 8)], [req(1)], [_borrower(300)])
    result = solve(p)
    (pre,) = result.preemptions
    assert pre.at >= NOW - 300 + p.min_runtime_s
    assert pre.at - NOW < 3 * 60 + 300
    assert result.assignments[1].start == pre.at


def test_guaranteed_reservations_are_never_reclaimed(solve: Solve) -> None:
    run = _borrower(H, kind=ReservationKind.GUARANTEED)
    p = problem(nodes(1), [tenant("a", 8, 8), tenant("b", 8, 8)], [req(1)], [run])
    result = solve(p)
    assert result.preemptions == ()
    assert starts(result)[1] == 20 * H


def test_borrowed_demand_does_not_reclaim(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a", 0, 8), tenant("b", 0, 8)], [req(1)], [_borrower(H)])
    result = solve(p)
    assert result.preemptions == ()
    assert starts(result)[1] == 20 * H


# -- budget ---------------------------------------------------------------------------------


def test_budget_stops_the_second_job(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a", budget=1.5 * 8 * H)], [req(1), req(2)])
    result = solve(p)
    assert len(result.assignments) == 1
    (u,) = result.unplaced.values()
    assert u.reason is Reason.BUDGET_EXHAUSTED and u.blocking == (("quota", "budget"),)


def test_budget_too_small_for_any_job(solve: Solve) -> None:
    p = problem(nodes(2), [tenant("a", budget=0.0)], [req(1, gpus=1)])
    assert solve(p).unplaced[1].reason is Reason.BUDGET_EXHAUSTED


# -- order, reasons and stability -----------------------------------------------------------


def test_higher_priority_goes_first(solve: Solve) -> None:
    p = problem(nodes(1), [tenant("a"), tenant("b")], [req(1, "a"), req(2, "b", priority=2)])
    assert starts(solve(p)) == {2: 0, 1: H}


def test_tenant_below_its_share_goes_first(solve: Solve) -> None:
    ts = [tenant("a", usage=1e6), tenant("b", usage=1e3)]
    p = problem(nodes(1), ts, [req(1, "a"), req(2, "b")])
    assert starts(solve(p)) == {2: 0, 1: H}


def test_waiting_behind_placed_work(solve: Solve) -> None:
    ts = [tenant("a"), tenant("b")]
    p = problem(nodes(1), ts, [req(1, "a", hours=3, priority=3), req(2, "b")], horizon_s=2 * H)
    u = solve(p).unplaced[2]
    assert u.reason is Reason.WAITING_FOR_HIGHER_PRIORITY
    assert u.blocking == (("tenant", "a"),)


def test_capacity_busy_names_the_holder(solve: Solve) -> None:
    run = Running(99, "b", "H100", (("n0", 8),), NOW - H, NOW + 5 * H, ReservationKind.GUARANTEED)
    p = problem(nodes(1), [tenant("a"), tenant("b", 8, 8)], [req(1)], [run], horizon_s=2 * H)
    u = solve(p).unplaced[1]
    assert u.reason is Reason.CAPACITY_BUSY
    assert u.blocking == (("tenant", "b"),) and u.earliest_start == NOW + 5 * H


def test_previous_nodes_are_kept(solve: Solve) -> None:
    prev = Assignment(1, (("n2", 8),), NOW, NOW + H, ReservationKind.BORROWED)
    p = problem(nodes(4), [tenant("a")], [req(1)], previous={1: prev})
    assert solve(p).assignments[1].allocation == (("n2", 8),)
