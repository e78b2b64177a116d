"""Idle reservations: flagged once after idle_minutes below idle_util_pct on all their nodes,
never on missing data or uncertain owners, and the operator's action applied."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from scheduler.tables import IdleTrackerRow, ReservationRow
from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.api.usage_helpers import agent, passes, pod, push
from tests.conftest import START

__all__ = ["agent"]

T = START


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def quiet(node: str, start_min: float, end_min: float, gpus: range = range(8), **kw: Any) -> list:
    """Passes every 10 s over ``gpus`` in ``(start, end]`` minutes after 09:00, at 1 %."""
    count = round((end_min - start_min) * 6)
    return passes(node, at(start_min) + timedelta(seconds=10), count, gpus, 1.0, **kw)


def idle_events(op: Any, request_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    events = ok(op.get(f"/v1/requests/{request_id}/events", headers=headers))
    return [e for e in events if e["kind"] == "idle"]


@pytest.fixture
def acme_node(op, cycle, app):
    """acme holds node-0 whole (8 GPUs) from 09:00 for 4 hours; idle = 30 min below 5 %."""
    app.state.ctx.settings.idle_minutes = 30
    app.state.ctx.settings.idle_util_pct = 5
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8, duration=4 * 3600)["id"]
    cycle()
    return acme, rid


def test_flagged_once_after_the_window_then_again_after_a_busy_spell(op, clock, agent, acme_node):
    acme, rid = acme_node
    clock.set(at(29))
    assert push(op, "node-0", quiet("node-0", 0, 29), headers=agent)["idle"] == []
    clock.set(at(31))
    got = push(op, "node-0", quiet("node-0", 29, 31), headers=agent)
    assert [(f["request_id"], f["gpus"], f["action"]) for f in got["idle"]] == [(rid, 8, "none")]
    assert got["idle"][0]["idle_since"] == "2026-11-23T09:00:10Z"
    [event] = idle_events(op, rid, acme)
    assert "below 5% utilisation for 30 min" in event["message"]
    assert event["data"]["action"] == "none"
    assert ok(op.get(f"/v1/requests/{rid}", headers=acme))["state"] == "active"
    # Still idle: no second event.
    clock.set(at(40))
    assert push(op, "node-0", quiet("node-0", 31, 40), headers=agent)["idle"] == []
    # One busy GPU in one pass ends the episode; 30 quiet minutes later it is flagged again.
    busy = passes("node-0", at(40) + timedelta(seconds=10), 1, range(8), 1.0, utils={3: 80.0})
    rest = passes("node-0", at(40) + timedelta(seconds=20), 179, range(8), 1.0)  # to 10:10:00
    clock.set(at(71))
    push(op, "node-0", busy + rest, headers=agent)
    assert len(idle_events(op, rid, acme)) == 1
    got = push(op, "node-0", quiet("node-0", 70, 71), headers=agent)
    assert got["idle"][0]["idle_since"] == "2026-11-23T09:40:10Z"
    assert len(idle_events(op, rid, acme)) == 2


def test_a_break_in_the_samples_restarts_the_clock(op, clock, agent, acme_node):
    acme, rid = acme_node
    clock.set(at(60))
    # 20 quiet minutes, 5 minutes without samples, 20 more quiet minutes: never 30 unbroken.
    push(op, "node-0", quiet("node-0", 0, 20) + quiet("node-0", 25, 45), headers=agent)
    assert idle_events(op, rid, acme) == []
    got = push(op, "node-0", quiet("node-0", 45, 56), headers=agent)
    assert got["idle"][0]["idle_since"] == "2026-11-23T09:25:10Z"


def test_a_threshold_of_zero_turns_detection_off(op, clock, agent, app, acme_node):
    app.state.ctx.settings.idle_util_pct = 0
    clock.set(at(40))
    assert push(op, "node-0", quiet("node-0", 0, 40), headers=agent)["idle"] == []


def test_old_data_flags_nothing(op, clock, agent, acme_node):
    """Samples buffered through a long outage show an idle hour that is long past."""
    clock.set(at(180))
    assert push(op, "node-0", quiet("node-0", 0, 60), headers=agent)["idle"] == []


def test_action_end_expires_the_request(op, clock, agent, app, acme_node):
    acme, rid = acme_node
    app.state.ctx.settings.idle_action = "end"
    clock.set(at(32))
    got = push(op, "node-0", quiet("node-0", 0, 31), headers=agent)
    assert got["idle"][0]["action"] == "end"
    req = ok(op.get(f"/v1/requests/{rid}", headers=acme))
    assert req["state"] == "expired"
    assert req["reason"]["code"] == "idle_ended"
    assert req["reservation"]["state"] == "ended"
    assert req["reservation"]["end_reason"] == "idle_ended"
    assert req["reservation"]["ended_at"] == "2026-11-23T09:32:00Z"
    kinds = [(e["kind"], e["to_state"]) for e in ok(op.get(f"/v1/requests/{rid}/events"))]
    assert kinds[-2:] == [("idle", None), ("state", "expired")]
    usage = ok(op.get("/v1/usage", headers=acme))["rows"][0]
    assert usage["allocated_gpu_s"] == 8 * 32 * 60  # charged until it was ended


def test_action_reclaimable_lets_guaranteed_demand_reclaim(op, clock, cycle, agent, app):
    app.state.ctx.settings.idle_action = "reclaimable"
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rival = make_tenant(op, "rival", guaranteed=0, limit=8)
    held = submit(op, acme, gpus=8, duration=4 * 3600)["id"]
    cycle()
    ok(op.put("/v1/tenants/acme/quotas/H100-80GB", json={"guaranteed": 0, "limit": 8}))
    ok(op.put("/v1/tenants/rival/quotas/H100-80GB", json={"guaranteed": 8, "limit": 8}))
    waiting = submit(op, rival, gpus=8, duration=3600)["id"]
    clock.set(at(5))
    cycle()
    assert ok(op.get(f"/v1/requests/{waiting}", headers=rival))["state"] == "planned"

    clock.set(at(32))
    got = push(op, "node-0", quiet("node-0", 0, 31), headers=agent)
    assert got["idle"][0]["action"] == "reclaimable"
    assert ok(op.get(f"/v1/requests/{held}", headers=acme))["reservation"]["kind"] == "borrowed"
    cycle()
    assert ok(op.get(f"/v1/requests/{waiting}", headers=rival))["state"] == "active"
    states = [e["to_state"] for e in ok(op.get(f"/v1/requests/{held}/events")) if e["to_state"]]
    assert states[-2:] == ["preempted", "pending"]


def test_reclaimable_leaves_a_non_preemptible_request_alone(op, clock, cycle, agent, app):
    app.state.ctx.settings.idle_action = "reclaimable"
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8, duration=4 * 3600, preemptible=False)["id"]
    cycle()
    clock.set(at(32))
    got = push(op, "node-0", quiet("node-0", 0, 31), headers=agent)
    assert got["idle"][0]["action"] == "none"
    [event] = idle_events(op, rid, acme)
    assert "not preemptible" in event["message"]
    assert ok(op.get(f"/v1/requests/{rid}", headers=acme))["reservation"]["kind"] == "guaranteed"


@pytest.fixture
def half_node(op, cycle):
    """acme holds 4 of node-0's 8 GPUs."""
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=4, duration=4 * 3600)["id"]
    cycle()
    return acme, rid


def test_a_reservation_without_pods_on_a_shared_node_is_idle(op, clock, agent, half_node):
    """No GPU of the node runs acme's pods: its 4 reserved GPUs are unused."""
    _, rid = half_node
    clock.set(at(32))
    got = push(op, "node-0", quiet("node-0", 0, 31, utils={6: 90.0}), headers=agent)
    assert [f["request_id"] for f in got["idle"]] == [rid]


def test_pods_of_unknown_owners_keep_a_reservation_from_being_flagged(op, clock, agent, half_node):
    acme, rid = half_node
    clock.set(at(32))
    stray = {0: [pod(rid)], 6: [pod(None, "other-team", "stray")]}
    got = push(op, "node-0", quiet("node-0", 0, 31, pods=stray, utils={6: 90.0}), headers=agent)
    assert got["idle"] == []
    assert idle_events(op, rid, acme) == []


def test_every_node_of_a_reservation_must_be_idle(op, clock, cycle, agent, app):
    make_pool(op, nodes=2, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=16, limit=16)
    rid = submit(op, acme, gpus=16, gpus_per_node=8, duration=4 * 3600)["id"]
    cycle()
    clock.set(at(32))
    # node-0 is quiet; node-1 has sent nothing (unknown there): not idle.
    assert push(op, "node-0", quiet("node-0", 0, 31), headers=agent)["idle"] == []
    # node-1 is busy for the first 5 minutes, then quiet.
    busy = passes("node-1", at(0) + timedelta(seconds=10), 30, range(8), 70.0)
    assert push(op, "node-1", busy + quiet("node-1", 5, 31), headers=agent)["idle"] == []
    clock.set(at(40))
    push(op, "node-0", quiet("node-0", 31, 36), headers=agent)
    got = push(op, "node-1", quiet("node-1", 31, 36), headers=agent)
    assert [(f["request_id"], f["gpus"]) for f in got["idle"]] == [(rid, 16)]
    assert got["idle"][0]["idle_since"] == "2026-11-23T09:05:00Z"
    assert len(idle_events(op, rid, acme)) == 1


def test_trackers_of_long_ended_reservations_are_dropped(op, clock, cycle, agent, engine):
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    first = submit(op, acme, gpus=8, duration=3600)["id"]
    cycle()
    clock.set(at(10))
    push(op, "node-0", quiet("node-0", 0, 10), headers=agent)
    clock.set(at(3 * 24 * 60))
    cycle()  # the first window ended long ago
    second = submit(op, acme, gpus=8, duration=3600)["id"]
    cycle()
    clock.advance(120)
    with Session(engine) as s:
        before = {(t.reservation_id, t.node) for t in s.exec(select(IdleTrackerRow))}
    push(op, "node-0", quiet("node-0", 3 * 24 * 60, 3 * 24 * 60 + 1), headers=agent)
    with Session(engine) as s:
        after = {t.reservation_id for t in s.exec(select(IdleTrackerRow))}
        reservations = {r.request_id: r.id for r in s.exec(select(ReservationRow))}
    assert before == {(reservations[first], "node-0")}
    assert after == {reservations[second]}
