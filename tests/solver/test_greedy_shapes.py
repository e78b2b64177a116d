"""Greedy list scheduling shares one failed search and explanation among look-alike requests
while the ledger is unchanged; the plan must be the one that searching and explaining every
request on its own gives. Explanations sum who holds the GPUs with numpy; the sums must be
the ones a plain loop over the reservations gives."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solver import Node, Problem, Quota, ReservationKind, Running, Tenant, Unplaced
from solver import ReservationKind as KIND
from solver.bench import generate
from solver.explain import explain, static_reason
from solver.greedy import greedy_order, place_in_order, place_one
from solver.grid import build_grid
from solver.ledger import Ledger, Placement
from solver.model import Request
from solver.objective import weights_of
from tests.solver import factory as f
from tests.solver.factory import NOW
from tests.solver.strategies import H

Outcome = dict[int, Unplaced | tuple[int, tuple[int, ...], object, tuple[int, ...]]]


@st.composite
def crowded(draw: st.DrawFn) -> Problem:
    """A small pool and more work than it holds in the horizon: requests come in look-alike
    groups, copies with other ids and submission times, most differing from the original in
    exactly one more field (so that sharing across a field that matters would show)."""
    nodes = tuple(
        Node(
            f"n{i}",
            "H100",
            draw(st.sampled_from((4, 8))),
            schedulable=i == 0 or draw(st.booleans()),
        )
        for i in range(draw(st.integers(1, 4)))
    )
    tenants = {}
    for t in range(draw(st.integers(1, 3))):
        limit = draw(st.integers(4, 24))
        budget = draw(st.one_of(st.none(), st.integers(10, 400).map(lambda h: h * 3600.0)))
        quota = Quota(draw(st.integers(0, limit)), limit, budget)
        usage = float(draw(st.integers(0, 10**6)))
        tenants[f"t{t}"] = Tenant(f"t{t}", {"H100": quota}, usage=usage)
    names = sorted(tenants)
    running = []
    for rid in range(100, 100 + draw(st.integers(0, 3))):
        node = draw(st.sampled_from(nodes))
        running.append(
            Running(
                rid,
                draw(st.sampled_from(names)),
                "H100",
                ((node.name, draw(st.integers(1, node.gpus))),),
                NOW - draw(st.integers(1, 20)) * 600,
                NOW + draw(st.integers(1, 24)) * H,
                draw(st.sampled_from(tuple(ReservationKind))),
                preemptible=draw(st.booleans()),
            )
        )
    requests: list[Request] = []
    for rid in range(draw(st.integers(2, 6))):
        per_node = draw(st.sampled_from((1, 2, 4, 8)))
        r = Request(
            id=rid,
            tenant=draw(st.sampled_from(names)),
            gpu_class="H100",
            gpus=per_node * draw(st.sampled_from((1, 1, 2))),
            gpus_per_node=per_node,
            duration_s=draw(st.sampled_from((2, 4, 8, 16))) * H,
            submitted_at=NOW - draw(st.integers(0, 10)) * 600,
            not_before=draw(st.one_of(st.none(), st.just(NOW + H))),
            deadline=draw(st.one_of(st.none(), st.integers(8, 30).map(lambda h: NOW + h * H))),
            priority=draw(st.integers(0, 2)),
            preemptible=draw(st.integers(0, 3)) > 0,
        )
        requests.append(r)
        for _ in range(draw(st.integers(2, 6))):
            copy = replace(r, id=1000 + len(requests), submitted_at=r.submitted_at + 60)
            field = draw(st.sampled_from(VARIED))
            if field == "gpus":
                copy = replace(copy, gpus=r.gpus * 2)
            elif field == "priority":
                copy = replace(copy, priority=r.priority + 1)
            elif field == "deadline":
                copy = replace(copy, deadline=None if r.deadline else NOW + 20 * H)
            elif field == "not_before":
                copy = replace(copy, not_before=None if r.not_before else NOW + H)
            elif field == "preemptible":
                copy = replace(copy, preemptible=not r.preemptible)
            elif field == "tenant":
                copy = replace(copy, tenant=draw(st.sampled_from(names)))
            elif field == "duration_s":
                copy = replace(copy, duration_s=r.duration_s * 2)
            requests.append(copy)
    return Problem(
        now=NOW,
        nodes=nodes,
        tenants=tenants,
        requests=tuple(requests),
        running=tuple(running),
        horizon_s=draw(st.sampled_from((12, 24, 48))) * H,
    )


VARIED = (
    "",
    "",
    "gpus",
    "priority",
    "deadline",
    "not_before",
    "preemptible",
    "tenant",
    "duration_s",
)


def one_by_one(
    problem: Problem, order: list[int] | None = None
) -> tuple[Outcome, Ledger, list[Placement]]:
    """The list schedule (greedy order unless ``order`` gives the request ids) with every
    request searched and explained on its own."""
    weights = weights_of(problem)
    ledger = Ledger(problem, build_grid(problem))
    out: Outcome = {}
    placed: list[Placement] = []
    for req in _order(problem, order):
        why = static_reason(ledger, req)
        if why is None:
            found = place_one(ledger, req, weights)
            if found is not None:
                ledger.commit(found)
                placed.append(found)
                out[req.id] = (found.slot, found.nodes, found.kind, found.preempt)
                continue
            why = explain(ledger, req)
        out[req.id] = why
    return out, ledger, placed


def _order(problem: Problem, order: list[int] | None) -> list[Request]:
    if order is None:
        return greedy_order(problem, weights_of(problem))
    by_id = {r.id: r for r in problem.requests}
    return [by_id[rid] for rid in order]


def shared(problem: Problem, order: list[int] | None = None) -> Outcome:
    weights = weights_of(problem)
    schedule = place_in_order(problem, _order(problem, order), weights, planner="greedy")
    out: Outcome = dict(schedule.plan.unplaced)
    for rid, pl in schedule.placements.items():
        out[rid] = (pl.slot, pl.nodes, pl.kind, pl.preempt)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded())
def test_look_alikes_get_the_plan_and_reasons_of_one_by_one_search(problem: Problem) -> None:
    assert shared(problem) == one_by_one(problem)[0]


def test_a_queue_past_the_full_pool_is_explained_as_one_by_one() -> None:
    # The benchmark's instance shape on a small pool: most requests find no start.
    problem = generate(gpus=64, pending=400, tenants=6, seed=3)
    expected, _, _ = one_by_one(problem)
    assert sum(isinstance(v, Unplaced) for v in expected.values()) > 100
    assert shared(problem) == expected


RUN_A = Running(100, "a", "H100", (("n0", 4),), NOW - H, NOW + 40 * H, KIND.BORROWED)
RUN_G = Running(100, "a", "H100", (("n0", 4),), NOW - H, NOW + 40 * H, KIND.GUARANTEED)
RUN_B = Running(100, "b", "H100", (("n0", 8),), NOW - 2 * H, NOW + 40 * H, KIND.BORROWED)
TWINS = {
    # a's limit is full with its running work; b's copy fits
    "tenant": f.problem(
        f.nodes(1),
        [f.tenant("a", limit=4), f.tenant("b", limit=8)],
        [f.req(1, "a", 4), f.req(2, "b", 4)],
        [RUN_A],
        horizon_s=12 * H,
    ),
    # request 0 holds the node from 5 h on; the copy without not_before fits before it
    "not_before": f.problem(
        f.nodes(1),
        [f.tenant("a")],
        [
            f.req(0, "a", 8, hours=20, not_before=NOW + 5 * H),
            f.req(1, "a", 8, hours=4, not_before=NOW + 2 * H),
            f.req(2, "a", 8, hours=4),
        ],
        horizon_s=12 * H,
    ),
    # the guaranteed quota is full; the preemptible copy borrows the free GPUs
    "preemptible": f.problem(
        f.nodes(1),
        [f.tenant("a", guaranteed=4, limit=8)],
        [f.req(1, "a", 4, preemptible=False), f.req(2, "a", 4)],
        [RUN_G],
        horizon_s=12 * H,
    ),
    # reclaiming b's borrowed GPUs is worth it for the higher priority only
    "weight": f.problem(
        f.nodes(1),
        [f.tenant("a", guaranteed=1, limit=8, usage=1e6), f.tenant("b")],
        [
            f.req(1, "a", 1, hours=0.5, priority=-2, preemptible=False),
            f.req(2, "a", 1, hours=0.5, priority=4, preemptible=False),
        ],
        [RUN_B],
        horizon_s=12 * H,
    ),
}


@pytest.mark.parametrize("field", sorted(TWINS))
def test_a_failed_request_does_not_speak_for_a_copy_that_differs_in(field: str) -> None:
    # The failing request goes first (any order: the CP-SAT planner places others too).
    p = TWINS[field]
    order = sorted(r.id for r in p.requests)
    expected, _, _ = one_by_one(p, order)
    assert isinstance(expected[order[-2]], Unplaced)
    assert not isinstance(expected[order[-1]], Unplaced)
    assert shared(p, order) == expected


def plain_blockers(
    ledger: Ledger,
    placed: list[Placement],
    req: Request,
    slot: int,
    *,
    running_only: bool,
    planned_only: bool,
) -> list[tuple[str, int]]:
    """Who holds GPUs on nodes big enough for ``req`` during its window from ``slot``."""
    pool = ledger.pools[req.gpu_class]
    j = int(ledger.ends(req.duration_s)[slot])
    cut = {rid: pl.slot for pl in placed for rid in pl.preempt}
    held: Counter[str] = Counter()

    def count(tenant: str, nodes: list[tuple[int, int]], a: int, b: int) -> None:
        if a < j and b > slot:
            for i, gpus in nodes:
                if pool.caps[i] >= req.gpus_per_node:
                    held[tenant] += gpus

    if not planned_only:
        for run in ledger.problem.running:
            a, b = ledger.grid.slot_span(run.start, run.end)
            nodes = [
                (ledger.where[name][1], gpus)
                for name, gpus in run.allocation
                if ledger.where.get(name, ("",))[0] == req.gpu_class
            ]
            count(run.tenant, nodes, a, min(b, cut.get(run.request_id, b)))
    if not running_only:
        for pl in placed:
            if pl.req.gpu_class == req.gpu_class:
                end = int(ledger.ends(pl.req.duration_s)[pl.slot])
                nodes = [(i, pl.req.gpus_per_node) for i in pl.nodes]
                count(pl.req.tenant, nodes, pl.slot, end)
    return sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded(), st.data())
def test_blockers_sum_what_each_reservation_holds(problem: Problem, data: st.DataObject) -> None:
    _, ledger, placed = one_by_one(problem)
    for req in problem.requests:
        if req.gpu_class not in ledger.pools:
            continue
        slot = data.draw(st.integers(0, ledger.grid.n_starts - 1))
        for running_only, planned_only in ((False, False), (True, False), (False, True)):
            got = ledger.blockers(req, slot, running_only=running_only, planned_only=planned_only)
            want = plain_blockers(
                ledger, placed, req, slot, running_only=running_only, planned_only=planned_only
            )
            assert got == want
