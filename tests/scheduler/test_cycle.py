"""The cycle's phases against a real database on simulated time."""

from __future__ import annotations

import threading
from typing import Any

from sqlmodel import select

import solver
from scheduler import apply as apply_phase
from scheduler import cycle as cycle_module
from scheduler import intents
from scheduler import snapshot as snapshot_phase
from scheduler.cycle import decide, run_cycle, solver_config
from scheduler.db import session_scope
from scheduler.domain import OPERATOR
from scheduler.services import requests as request_service
from scheduler.tables import ReservationRow
from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.invariants import plan_violations


def test_request_cancelled_after_snapshot_is_left_alone(op, engine, settings, clock):
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    r = submit(op, acme, gpus=8)
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, clock.now(), settings)
    plan, violations, _ = decide(snap.problem, solver_config(settings))
    assert not violations and r["id"] in plan.assignments
    ok(op.post(f"/v1/requests/{r['id']}/cancel", headers=acme))
    with session_scope(engine) as s:
        applied = apply_phase.apply_plan(s, intents.prepare(snap, plan, clock.now()))
    assert applied.stale == 1 and applied.activated == 0
    assert ok(op.get(f"/v1/requests/{r['id']}", headers=acme))["state"] == "cancelled"
    with session_scope(engine) as s:
        assert s.exec(select(ReservationRow).where(ReservationRow.state == "active")).all() == []


def test_opening_rechecks_the_nodes(op, engine, settings, clock, cycle):
    """A plan made before another reservation opened on the same node must not double-book."""
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    first = submit(op, acme, gpus=8)
    with session_scope(engine, write=False) as s:
        stale_snap = snapshot_phase.take(s, clock.now(), settings)
    stale_plan, _, _ = decide(stale_snap.problem, solver_config(settings))
    cycle()  # opens `first` on the only node
    second = submit(op, acme, gpus=8)
    # Replay the stale plan, pretending `second` was in it at the same place as `first`.
    a = stale_plan.assignments[first["id"]]
    forged = solver.Plan(
        assignments={
            second["id"]: solver.Assignment(second["id"], a.allocation, a.start, a.end, a.kind)
        },
        unplaced={},
    )
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, clock.now(), settings)
    with session_scope(engine) as s:
        applied = apply_phase.apply_plan(s, intents.prepare(snap, forged, clock.now()))
    assert applied.activated == 0 and applied.stale == 1
    assert ok(op.get(f"/v1/requests/{second['id']}", headers=acme))["state"] == "pending"


def test_invalid_plan_is_refused_and_greedy_used(op, engine, settings, clock):
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    a = submit(op, acme, gpus=8)
    b = submit(op, acme, gpus=8)
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, clock.now(), settings)

    def double_booking(problem: solver.Problem, config: solver.SolverConfig) -> solver.Plan:
        alloc = (("node-0", 8),)
        now = problem.now
        return solver.Plan(
            assignments={
                r.id: solver.Assignment(
                    r.id, alloc, now, now + r.duration_s, solver.ReservationKind.GUARANTEED
                )
                for r in problem.requests
            },
            unplaced={},
            planner="broken",
        )

    plan, violations, why = decide(snap.problem, solver_config(settings), double_booking)
    assert any(v.startswith("capacity") for v in violations)
    assert why is not None and "broken plan broke" in why
    assert plan.planner == "greedy"
    assert solver.validate(snap.problem, plan) == []
    assert set(plan.assignments) | set(plan.unplaced) == {a["id"], b["id"]}


def test_drained_node_gets_no_new_reservations(op, cycle):
    make_pool(op, nodes=2)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    running = submit(op, acme, gpus=8)
    cycle()
    node = ok(op.get(f"/v1/requests/{running['id']}", headers=acme))["reservation"]["allocation"][
        0
    ]["node"]
    other = "node-1" if node == "node-0" else "node-0"
    ok(op.post(f"/v1/nodes/{other}/drain"))
    waiting = submit(op, acme, gpus=8)
    cycle()
    got = ok(op.get(f"/v1/requests/{waiting['id']}", headers=acme))
    assert got["state"] == "planned"
    assert got["reservation"]["allocation"] == [{"node": node, "gpus": 8}]
    assert ok(op.get(f"/v1/requests/{running['id']}", headers=acme))["state"] == "active"
    node_view = ok(op.get(f"/v1/nodes/{other}"))
    assert node_view["schedulable"] is False and node_view["unschedulable_reason"] == "drained"
    ok(op.post(f"/v1/nodes/{other}/undrain"))
    cycle()
    assert ok(op.get(f"/v1/requests/{waiting['id']}", headers=acme))["state"] == "active"


def test_impossible_requests_are_rejected_with_reasons(op, cycle, clock):
    make_pool(op, nodes=2)
    acme = make_tenant(op, "acme", guaranteed=8, limit=32)
    ok(op.post("/v1/gpu-classes", json={"name": "A100-40GB"}), 201)
    ok(op.post("/v1/nodes", json={"name": "a100-0", "gpu_class": "A100-40GB", "gpus": 8}), 201)
    over_limit = submit(op, acme, gpus=8, gpu_class="A100-40GB")  # no A100 quota: limit 0
    too_big = submit(op, acme, gpus=24, gpus_per_node=8)  # 3 nodes of 8; the pool has 2
    late = submit(op, acme, gpus=8, duration=3600, deadline="2026-11-23T10:30:00Z")
    clock.advance(3600)  # now 10:00: an hour-long run can no longer end by 10:30
    cycle()
    reasons = {
        rid: ok(op.get(f"/v1/requests/{rid}"))
        for rid in (over_limit["id"], too_big["id"], late["id"])
    }
    assert {rid: (r["state"], r["reason"]["code"]) for rid, r in reasons.items()} == {
        over_limit["id"]: ("rejected", "quota_exhausted"),
        too_big["id"]: ("rejected", "too_large_for_pool"),
        late["id"]: ("rejected", "deadline_unreachable"),
    }
    assert "limit is 0" in reasons[over_limit["id"]]["reason"]["message"]


def test_not_before_beyond_horizon_waits_with_reason(op, cycle):
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme")
    far = submit(op, acme, gpus=1, not_before="2026-12-20T09:00:00Z")
    cycle()
    got = ok(op.get(f"/v1/requests/{far['id']}"))
    assert got["state"] == "pending"
    assert got["reason"]["code"] == "not_before_beyond_horizon"


def test_operator_actions_are_audited(op, engine, clock):
    make_pool(op, nodes=1)
    make_tenant(op, "acme")
    ok(op.post("/v1/nodes/node-0/drain"))
    log = ok(op.get("/v1/audit-log", params={"limit": 100}))["items"]
    actions = [e["action"] for e in reversed(log)]
    assert actions == [
        "gpu_class.create",
        "node.create",
        "tenant.create",
        "quota.create",
        "api_key.issue",
        "node.drain",
    ]
    drain = log[0]
    assert drain["actor"] == "operator"
    assert drain["before"]["drained"] is False and drain["after"]["drained"] is True
    with session_scope(engine) as s:
        assert request_service.list_page(s, OPERATOR, limit=10, cursor=None).items == []


def test_apply_writes_the_fresh_requests_and_skips_the_stale_one(op, engine, settings, clock):
    """The apply locks and writes all of a plan's requests at once; a request changed after
    the snapshot keeps its new state and gets no event, the others are written in full."""
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    reqs = [submit(op, acme, gpus=2) for _ in range(3)]
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, clock.now(), settings)
    plan, violations, _ = decide(snap.problem, solver_config(settings))
    assert not violations and all(r["id"] in plan.assignments for r in reqs)
    ok(op.post(f"/v1/requests/{reqs[1]['id']}/cancel", headers=acme))
    with session_scope(engine) as s:
        applied = apply_phase.apply_plan(s, intents.prepare(snap, plan, clock.now()))
    assert (applied.activated, applied.stale) == (2, 1)
    states = [ok(op.get(f"/v1/requests/{r['id']}", headers=acme))["state"] for r in reqs]
    assert states == ["active", "cancelled", "active"]
    for r, state in zip(reqs, states, strict=True):
        events = ok(op.get(f"/v1/requests/{r['id']}/events", headers=acme))
        moves = [e["to_state"] for e in events if e["kind"] == "state"]
        assert ("active" in moves) == (state == "active")
    with session_scope(engine) as s:
        active = s.exec(select(ReservationRow).where(ReservationRow.state == "active")).all()
    assert sorted(res.request_id for res in active) == [reqs[0]["id"], reqs[2]["id"]]


def test_apply_in_parts_never_leaves_a_double_booked_plan(op, engine, settings, clock, monkeypatch):
    """A cycle that moves stored reservations and adds new ones writes in several
    transactions; the stored plan is valid after every one of them, and whole at the end."""
    make_pool(op, nodes=1)
    low = make_tenant(op, "low", guaranteed=0, limit=8)
    high = make_tenant(op, "high", guaranteed=8, limit=8)
    queued = [submit(op, low, gpus=8)["id"] for _ in range(3)]
    run_cycle(engine, settings, clock)
    before = {r: ok(op.get(f"/v1/requests/{r}", headers=low))["planned_start"] for r in queued}
    added = [submit(op, high, gpus=8)["id"] for _ in range(3)]

    monkeypatch.setattr(cycle_module, "APPLY_PART", 1)
    seen: list[list[str]] = []

    def fence(_session):  # runs first in every write transaction of the cycle
        seen.append(plan_violations(engine))
        return True

    result = run_cycle(engine, settings, clock, fence=fence)
    # advance, then the part that moves the borrowed plan aside and adds one, then one each
    assert len(seen) == 1 + len(added)
    assert all(v == [] for v in seen), seen
    assert plan_violations(engine) == []
    assert result.applied.stale == 0
    after = {r: ok(op.get(f"/v1/requests/{r}", headers=low))["planned_start"] for r in queued}
    assert after != before  # the first part moved stored reservations
    states = {ok(op.get(f"/v1/requests/{r}", headers=high))["state"] for r in added}
    assert states <= {"planned", "active"}


def test_an_extension_during_planning_keeps_the_stored_plan_valid(op, engine, settings, clock):
    """A window extended after the snapshot may overlap what the plan puts after its old
    end: the cycle writes none of that, and the next cycle plans around the new end."""
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    running = submit(op, acme, gpus=8, duration=3600)["id"]
    run_cycle(engine, settings, clock)
    assert ok(op.get(f"/v1/requests/{running}", headers=acme))["state"] == "active"
    waiting = submit(op, acme, gpus=8, duration=3600)["id"]

    def plan_while_extending(problem, config):
        plan = solver.plan(problem, config)
        assert waiting in plan.assignments  # right after the running window, as read
        ok(op.post(f"/v1/requests/{running}/extend", json={"duration": 1800}, headers=acme))
        return plan

    result = run_cycle(engine, settings, clock, plan_fn=plan_while_extending)
    assert result.error is not None and "extended after the snapshot" in result.error
    assert plan_violations(engine) == []
    assert ok(op.get(f"/v1/requests/{waiting}", headers=acme))["state"] == "pending"

    run_cycle(engine, settings, clock)
    assert plan_violations(engine) == []
    after = ok(op.get(f"/v1/requests/{waiting}", headers=acme))
    extended = ok(op.get(f"/v1/requests/{running}", headers=acme))
    assert after["state"] == "planned" and after["planned_start"] >= extended["planned_end"]


def test_an_extension_waits_for_a_part_being_written_then_sees_it(op, engine, settings, clock):
    """The other order: a part and an extension take turns until the part commits, so an
    extension that comes meanwhile checks the plan with that part in it."""
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    running = submit(op, acme, gpus=8, duration=3600)["id"]
    run_cycle(engine, settings, clock)
    waiting = submit(op, acme, gpus=8, duration=3600)["id"]
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, clock.now(), settings)
    plan, _, _ = decide(snap.problem, solver_config(settings))
    assert waiting in plan.assignments
    answers: list[Any] = []

    def extend() -> None:
        answers.append(
            op.post(f"/v1/requests/{running}/extend", json={"duration": 1800}, headers=acme)
        )

    extension = threading.Thread(target=extend)
    with session_scope(engine) as s:
        apply_phase.apply_plan(s, intents.prepare(snap, plan, clock.now()))
        extension.start()
        extension.join(0.5)
        assert extension.is_alive() and not answers  # waits for the part to commit
    extension.join(30)
    assert answers[0].status_code == 409, answers[0].text  # the node is planned from the old end
    assert plan_violations(engine) == []


def test_split_puts_every_write_in_exactly_one_part():
    """Pure: moves, openings and drops come first (with the plan's preemptions); new planned
    reservations follow in parts of the given size."""
    a = solver.Assignment(1, (("n", 1),), 0, 60, solver.ReservationKind.BORROWED)

    def intent(i: int, outcome: intents.Outcome, existing: int | None, state=None):
        return intents.Intent(i, outcome, None, a, state, existing)  # type: ignore[arg-type]

    plan_state = intents.ReservationState.PLANNED
    adds = [intent(i, intents.Outcome.PLAN, None, plan_state) for i in range(5)]
    others = [
        intent(10, intents.Outcome.PLAN, 3, plan_state),  # a move
        intent(11, intents.Outcome.ACTIVATE, None, intents.ReservationState.ACTIVE),
        intent(12, intents.Outcome.WAIT, 4),  # a drop
        intent(13, intents.Outcome.PLAN, None, None),  # unchanged
    ]
    mixed = [adds[0], others[0], adds[1], others[1], others[2], adds[2], adds[3], others[3]]
    mixed.append(adds[4])
    whole = intents.Prepared(None, None, None, mixed)  # type: ignore[arg-type]
    parts = intents.split(whole, 2)
    assert [[it.ref for it in p.intents] for p in parts] == [[10, 11, 12, 13, 0, 1], [2, 3], [4]]
    assert [p.first for p in parts] == [True, False, False]
    assert intents.split(whole, 10)[0].intents == others + adds


def test_a_window_opened_after_a_cancel_starts_after_the_cancel_ended_it(
    op, engine, settings, clock, cycle
):
    """The plan starts a window at the snapshot's time, rounded up to the second. A cancel
    that ends the node's previous window a fraction later, but commits before the snapshot
    reads the node, frees the GPUs; the window opened on them must not start on record
    before that end (seen in the mixed load: 9 and 16 GPUs on 8-GPU nodes for 42-45 ms)."""
    from api.bench import overcommitted

    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    first = submit(op, acme, gpus=8)
    cycle()
    second = submit(op, acme, gpus=8)
    snapshot_now = clock.now()  # the cycle reads its clock, then the database
    clock.advance(0.3)
    ok(op.post(f"/v1/requests/{first['id']}/cancel", headers=acme))  # ends `first` now
    with session_scope(engine, write=False) as s:
        snap = snapshot_phase.take(s, snapshot_now, settings)
    plan, violations, _ = decide(snap.problem, solver_config(settings))
    assert not violations and plan.assignments[second["id"]].start == snap.problem.now
    clock.advance(0.3)
    with session_scope(engine) as s:
        applied = apply_phase.apply_plan(s, intents.prepare(snap, plan, clock.now()))
    assert applied.activated == 1
    with session_scope(engine) as s:
        ended = s.exec(select(ReservationRow).where(ReservationRow.request_id == first["id"])).one()
        opened = s.exec(
            select(ReservationRow).where(ReservationRow.request_id == second["id"])
        ).one()
        assert opened.state == "active" and ended.ended_at is not None
        assert opened.start == clock.now() > ended.ended_at
        assert overcommitted(s.connection()) == []
