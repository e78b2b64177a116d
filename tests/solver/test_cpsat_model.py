"""Per-rule tests of the CP-SAT class model on tiny instances, solved to optimality."""

from __future__ import annotations

from solver import Node, ReservationKind, Running
from solver.model import Assignment
from tests.solver.factory import NOW, H, nodes, problem, req, tenant
from tests.solver.model_helpers import prepare, solve

HOUR = H // 60  # model units are minutes at the default resolution


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_capacity_spreads_jobs_over_time() -> None:
    p = problem(nodes(1), [tenant("a")], [req(i) for i in range(3)])
    got = solve(prepare(p).instances["H100"])
    assert got.status == "OPTIMAL"
    assert sorted(got.starts.values()) == [0, HOUR, 2 * HOUR]


def test_small_jobs_may_share_capacity() -> None:
    p = problem(nodes(1), [tenant("a")], [req(i, gpus=4) for i in range(2)])
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, 0]


def test_limit_serialises() -> None:
    p = problem(nodes(4), [tenant("a", 0, 8)], [req(1), req(2)])
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, HOUR]


def test_guarantee_serialises_non_preemptible_work() -> None:
    reqs = [req(1, preemptible=False), req(2, preemptible=False)]
    p = problem(nodes(4), [tenant("a", 8, 16)], reqs)
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, HOUR]


def test_preemptible_work_borrows_beside_the_guarantee() -> None:
    p = problem(nodes(4), [tenant("a", 8, 16)], [req(1), req(2)])
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, 0]


def test_budget_leaves_one_out() -> None:
    p = problem(nodes(2), [tenant("a", budget=1.5 * 8 * H)], [req(1), req(2)])
    assert len(solve(prepare(p).instances["H100"]).starts) == 1


def test_windows() -> None:
    reqs = [req(1, not_before=NOW + 3 * H), req(2, hours=2, deadline=NOW + 2 * H)]
    p = problem(nodes(2), [tenant("a")], reqs)
    got = solve(prepare(p).instances["H100"])
    assert got.starts[1] >= 3 * HOUR and got.starts[2] == 0


def test_whole_node_gang_waits_for_untouched_nodes() -> None:
    run = Running(9, "b", "H100", (("n0", 1),), NOW - H, NOW + 5 * H, ReservationKind.GUARANTEED)
    ts = [tenant("a"), tenant("b", 8, 8)]
    p = problem(nodes(2), ts, [req(1, gpus=16, per_node=8)], [run])
    assert solve(prepare(p).instances["H100"]).starts[1] >= 5 * HOUR


def test_big_members_do_not_share_a_node() -> None:
    p = problem(nodes(1), [tenant("a")], [req(1, gpus=5, per_node=5), req(2, gpus=3)])
    got = solve(prepare(p).instances["H100"])
    assert sorted(got.starts.values()) == [0, 0]  # 5 + 3 share one node
    p = problem(nodes(2), [tenant("a")], [req(1, gpus=5, per_node=5), req(2, gpus=5)])
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, 0]
    p = problem((Node("n0", "H100", 8),), [tenant("a", 0, 16)], [req(1, gpus=5), req(2, gpus=5)])
    assert sorted(solve(prepare(p).instances["H100"]).starts.values()) == [0, HOUR]


def test_entitled_demand_reclaims_a_borrowed_tail() -> None:
    run = Running(9, "b", "H100", (("n0", 8),), NOW - H, NOW + 20 * H, ReservationKind.BORROWED)
    p = problem(nodes(1), [tenant("a", 8, 8), tenant("b", 0, 8)], [req(1)], [run])
    got = solve(prepare(p).instances["H100"])
    assert got.starts[1] == 0 and got.preempted == {9: True}


def test_guaranteed_running_work_is_not_a_tail() -> None:
    run = Running(9, "b", "H100", (("n0", 8),), NOW - H, NOW + 2 * H, ReservationKind.GUARANTEED)
    p = problem(nodes(1), [tenant("a", 8, 8), tenant("b", 8, 8)], [req(1)], [run])
    prep = prepare(p)
    assert prep.instances["H100"].tails == []
    assert solve(prep.instances["H100"]).starts[1] == 2 * HOUR


def test_previous_start_is_kept_when_it_costs_nothing() -> None:
    prev = Assignment(2, (("n0", 8),), NOW + H, NOW + 2 * H, ReservationKind.BORROWED)
    p = problem(nodes(1), [tenant("a")], [req(1), req(2)], previous={2: prev})
    got = solve(prepare(p).instances["H100"])
    assert got.starts == {1: 0, 2: HOUR}
