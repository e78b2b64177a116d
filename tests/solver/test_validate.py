"""The validator catches each broken rule on hand-made plans."""

from __future__ import annotations

from solver import (
    Assignment,
    Node,
    Plan,
    Preemption,
    Problem,
    Reason,
    Request,
    ReservationKind,
    Running,
    Unplaced,
    validate,
)
from tests.solver.factory import NOW, H, nodes, problem, req, tenant

G, B = ReservationKind.GUARANTEED, ReservationKind.BORROWED


def placed(*assignments: Assignment, preemptions: tuple[Preemption, ...] = ()) -> Plan:
    return Plan(
        assignments={a.request_id: a for a in assignments}, unplaced={}, preemptions=preemptions
    )


def a(
    rid: int,
    alloc: tuple[tuple[str, int], ...],
    start: int = 0,
    hours: float = 1,
    kind: ReservationKind = B,
) -> Assignment:
    return Assignment(rid, alloc, NOW + start, NOW + start + int(hours * H), kind)


def rules(p: Problem, plan: Plan) -> set[str]:
    return {v.rule for v in validate(p, plan)}


def base(
    *requests: Request,
    running: tuple[Running, ...] = (),
    budget: float | None = None,
    horizon_s: int = 7 * 24 * H,
) -> Problem:
    ts = [tenant("a", 8, 16, budget=budget), tenant("b", 0, 16)]
    return problem(nodes(2), ts, requests, running, horizon_s=horizon_s)


def test_a_valid_plan_passes() -> None:
    p = base(req(1), req(2))
    assert validate(p, placed(a(1, (("n0", 8),), kind=G), a(2, (("n1", 8),)))) == []


def test_coverage() -> None:
    p = base(req(1), req(2))
    plan = Plan(
        assignments={1: a(1, (("n0", 8),)), 3: a(3, (("n1", 8),))},
        unplaced={1: Unplaced(1, Reason.CAPACITY_BUSY)},
    )
    found = [v.detail for v in validate(p, plan) if v.rule == "coverage"]
    assert any("both" in d for d in found)
    assert any("neither" in d for d in found)
    assert any("not a waiting" in d for d in found)


def test_capacity() -> None:
    p = base(req(1), req(2, gpus=2))
    assert rules(p, placed(a(1, (("n0", 8),)), a(2, (("n0", 2),), start=H // 2))) == {"capacity"}


def test_capacity_counts_running_work() -> None:
    run = Running(9, "b", "H100", (("n0", 4),), NOW - H, NOW + H, B)
    p = base(req(1), running=(run,))
    assert "capacity" in rules(p, placed(a(1, (("n0", 8),))))


def test_back_to_back_is_fine() -> None:
    p = base(req(1), req(2))
    assert validate(p, placed(a(1, (("n0", 8),)), a(2, (("n0", 8),), start=H))) == []


def test_gang_shape() -> None:
    p = base(req(1, gpus=16, per_node=8))
    assert "gang" in rules(p, placed(a(1, (("n0", 16),))))
    assert "gang" in rules(p, placed(a(1, (("n0", 8), ("n1", 4)))))


def test_duration_and_horizon() -> None:
    p = base(req(1))
    assert "duration" in rules(p, placed(Assignment(1, (("n0", 8),), NOW, NOW + 60, B)))
    assert "horizon" in rules(p, placed(a(1, (("n0", 8),), start=-60)))
    assert "horizon" in rules(p, placed(a(1, (("n0", 8),), start=p.horizon_s)))


def test_windows() -> None:
    p = base(req(1, not_before=NOW + H), req(2, deadline=NOW + H))
    got = rules(p, placed(a(1, (("n0", 8),)), a(2, (("n1", 8),), start=60)))
    assert got == {"not_before", "deadline"}


def test_node_class_and_draining() -> None:
    pool = (Node("n0", "A100", 8), Node("n1", "H100", 8, schedulable=False))
    p = problem(pool, [tenant("a")], [req(1), req(2)])
    got = rules(p, placed(a(1, (("n0", 8),)), a(2, (("n1", 8),))))
    assert {"gpu_class", "draining"} <= got
    assert "node" in rules(p, placed(a(1, (("zz", 8),))))


def test_limit_and_guarantee() -> None:
    p = problem(nodes(4), [tenant("a", 8, 16)], [req(1), req(2), req(3)])
    over_limit = placed(a(1, (("n0", 8),)), a(2, (("n1", 8),)), a(3, (("n2", 8),)))
    assert rules(p, over_limit) == {"limit"}
    p = problem(nodes(4), [tenant("a", 8, 16)], [req(1), req(2)])
    over_guarantee = placed(a(1, (("n0", 8),), kind=G), a(2, (("n1", 8),), kind=G))
    assert rules(p, over_guarantee) == {"guaranteed"}


def test_existing_overuse_is_not_charged_to_a_plan_that_avoids_it() -> None:
    run = Running(9, "a", "H100", (("n0", 8), ("n1", 8)), NOW - H, NOW + H, G)
    p = problem(nodes(2), [tenant("a", 8, 8)], [req(1)], [run])
    assert validate(p, placed(a(1, (("n0", 8),), start=H, kind=G))) == []
    assert {"limit", "guaranteed", "capacity"} <= rules(p, placed(a(1, (("n0", 8),), kind=G)))


def test_non_preemptible_must_be_guaranteed() -> None:
    p = base(req(1, preemptible=False))
    assert rules(p, placed(a(1, (("n0", 8),)))) == {"preemptible"}


def test_budget() -> None:
    p = base(req(1), req(2), budget=1.5 * 8 * H)
    assert rules(p, placed(a(1, (("n0", 8),)), a(2, (("n1", 8),)))) == {"budget"}


def _run(kind: ReservationKind = B, started_ago: int = H, preemptible: bool = True) -> Running:
    return Running(
        9, "b", "H100", (("n0", 8),), NOW - started_ago, NOW + 5 * H, kind, 0, preemptible
    )


def test_preemption_rules() -> None:
    p = base(req(1), running=(_run(),))
    ok = placed(a(1, (("n0", 8),), kind=G), preemptions=(Preemption(9, NOW, "a"),))
    assert validate(p, ok) == []
    # No preemption: the guaranteed job collides with the borrower.
    assert "capacity" in rules(p, placed(a(1, (("n0", 8),), kind=G)))
    # A preemption that serves nothing guaranteed.
    useless = placed(a(1, (("n1", 8),), kind=G), preemptions=(Preemption(9, NOW, "a"),))
    assert rules(p, useless) == {"preemption"}
    # Borrowed work may not reclaim.
    borrowed = placed(a(1, (("n0", 8),)), preemptions=(Preemption(9, NOW, "a"),))
    assert rules(p, borrowed) == {"preemption"}


def test_preemption_of_protected_reservations() -> None:
    pre = (Preemption(9, NOW, "a"),)
    plan = placed(a(1, (("n0", 8),), kind=G), preemptions=pre)
    for run in (_run(G), _run(preemptible=False), _run(started_ago=60)):
        assert "preemption" in rules(base(req(1), running=(run,)), plan)
    assert "preemption" in rules(base(req(1)), plan)  # nothing running to preempt
    late = placed(a(1, (("n0", 8),), kind=G), preemptions=(Preemption(9, NOW + 6 * H, "a"),))
    assert "preemption" in rules(base(req(1), running=(_run(),)), late)
