"""Issue 4 on simulated time: reclaim, budgets and top-ups, early finish, extension, reasons,
ETAs, and a whole day of a small hub in seconds of wall time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from tests.api.helpers import ok
from tests.scheduler.hub import Hub

H = "H100-80GB"


@pytest.fixture
def hub(op, clock, cycle, engine) -> Hub:
    h = Hub(op, clock, cycle, engine)
    h.pool(H, nodes=4)  # 32 GPUs
    h.tenant("acme", {H: {"guaranteed": 16, "limit": 32}})
    h.tenant(
        "blue", {H: {"guaranteed": 8, "limit": 24, "budget_gpu_hours": 20, "budget_period": "day"}}
    )
    h.tenant("cortex", {H: {"guaranteed": 0, "limit": 32}})
    return h


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_guaranteed_arrival_reclaims_borrowed_gpus_after_grace(hub):
    borrowed = hub.submit("cortex", gpus=32, gpus_per_node=8, duration=6 * 3600)
    hub.cycle()
    got = hub.get(borrowed)
    assert got["state"] == "active" and got["reservation"]["kind"] == "borrowed"
    t0 = hub.clock.now()

    hub.run_for(minutes=2)
    arrival = hub.clock.now()
    claim = hub.submit("acme", gpus=16, gpus_per_node=8, duration=3600)
    hub.cycle()
    planned = hub.get(claim)
    # The borrower has run 2 of its 10 minimum minutes: the claim is planned for the end of
    # the grace, on guaranteed quota.
    assert planned["state"] == "planned"
    assert ts(planned["planned_start"]) == t0 + timedelta(minutes=10)
    assert planned["reservation"]["kind"] == "guaranteed"

    hub.run_for(minutes=10)
    started = hub.get(claim)
    assert started["state"] == "active"
    grace_end = t0 + timedelta(minutes=10)
    assert ts(started["started_at"]) <= max(grace_end, arrival) + hub.interval
    victim = hub.get(borrowed)
    assert victim["state"] in ("pending", "planned", "active")
    events = ok(hub.op.get(f"/v1/requests/{borrowed}/events"))
    assert [e["to_state"] for e in events if e["kind"] == "state"][:3] == [
        "active",
        "preempted",
        "pending",
    ]
    assert "acme" in next(e["message"] for e in events if e["to_state"] == "preempted")
    # The victim's reservation ended at the reclaim; its GPUs are what acme got.
    plan = ok(hub.op.get("/v1/plan", params={"start": t0.isoformat()}))
    ended = [
        r for r in plan["reservations"] if r["request_id"] == borrowed and r["state"] == "ended"
    ]
    assert ended and ended[0]["end_reason"] == "preempted"
    assert ts(ended[0]["end"]) == ts(started["started_at"])


def test_budget_stop_and_top_up(hub):
    first = hub.submit("blue", gpus=8, duration=2 * 3600)  # 16 GPU-hours of 20
    hub.cycle()
    assert hub.state(first) == "active"
    second = hub.submit("blue", gpus=8, duration=3600)  # 8 more: over budget
    hub.cycle()
    got = hub.get(second)
    assert got["state"] == "pending"
    assert got["reason"]["code"] == "budget_exhausted"
    assert "4.0" in got["reason"]["message"] and "8.0" in got["reason"]["message"]
    why = ok(hub.op.get(f"/v1/requests/{second}/explain", headers=hub.keys["blue"]))
    assert "budget" in [b["kind"] for b in why["bindings"]]

    quota = ok(hub.op.get("/v1/quotas", headers=hub.keys["blue"]))[0]
    assert quota["budget"]["committed_gpu_hours"] == 16.0
    assert quota["budget"]["left_gpu_hours"] == 4.0

    topped = ok(
        hub.op.post(f"/v1/tenants/blue/quotas/{H}/top-up", json={"gpu_hours": 10, "note": "grant"})
    )
    assert topped["budget"]["left_gpu_hours"] == 14.0
    hub.cycle()
    assert hub.state(second) == "active"
    log = ok(hub.op.get("/v1/audit-log", params={"action": "quota.top_up"}))["items"]
    assert log[0]["after"]["gpu_hours"] == 10


def test_early_finish_frees_gpus_at_once_and_extension_needs_room(hub):
    a = hub.submit("acme", gpus=16, gpus_per_node=8, duration=4 * 3600)
    b = hub.submit("acme", gpus=16, gpus_per_node=8, duration=2 * 3600)
    hub.cycle()
    assert hub.state(a) == "active" and hub.state(b) == "active"
    c = hub.submit("acme", gpus=16, gpus_per_node=8, duration=3600)
    hub.cycle()
    assert hub.state(c) == "planned"
    eta = ts(hub.get(c)["planned_start"])
    assert eta == hub.clock.now() + timedelta(hours=2)  # when b's window ends

    # b cannot be extended: c is planned on b's nodes right after it.
    r = hub.post("acme", f"/v1/requests/{b}/extend", {"duration": 1800})
    assert r.status_code == 409 and r.json()["code"] == "no_room"
    # a can be extended by one hour: nothing is planned on its nodes after it.
    extended = ok(hub.post("acme", f"/v1/requests/{a}/extend", {"duration": "PT1H"}))
    assert extended["duration_s"] == 5 * 3600
    assert ts(extended["reservation"]["end"]) == hub.clock.now() + timedelta(hours=5)
    # a tenant may not extend another tenant's request
    assert hub.post("cortex", f"/v1/requests/{a}/extend", {"duration": 60}).status_code == 404

    hub.run_for(minutes=30)
    ok(hub.post("acme", f"/v1/requests/{b}/complete", {"detail": "converged early"}))
    hub.cycle()
    started = hub.get(c)
    assert started["state"] == "active"
    assert ts(started["started_at"]) == hub.clock.now()
    assert ts(started["started_at"]) < eta


def test_waiting_requests_always_say_why(hub):
    hub.submit("cortex", gpus=32, gpus_per_node=8, duration=3 * 3600, preemptible=True)
    hub.cycle()
    waiting = hub.submit("cortex", gpus=8, duration=3600)  # at its limit of 32
    late = hub.submit("acme", gpus=8, duration=3600, not_before="2026-12-30T00:00:00Z")
    hub.cycle()
    got = hub.get(waiting)
    assert got["state"] == "planned"  # after its own big request ends
    why = ok(hub.op.get(f"/v1/requests/{waiting}/explain", headers=hub.keys["cortex"]))
    kinds = [b["kind"] for b in why["bindings"]]
    assert "capacity" in kinds or "quota_limit" in kinds
    assert why["queue_position"]["tenant"] == 1
    assert hub.get(late)["reason"]["code"] == "not_before_beyond_horizon"


def test_explain_names_other_tenants_without_their_requests(hub):
    blocker = hub.submit("cortex", gpus=32, gpus_per_node=8, duration=3 * 3600)
    hub.cycle()
    hub.run_for(minutes=20)
    mine = hub.submit("blue", gpus=16, gpus_per_node=8, duration=3600)  # over its guarantee
    hub.cycle()
    why = ok(hub.op.get(f"/v1/requests/{mine}/explain", headers=hub.keys["blue"]))
    capacity = next(b for b in why["bindings"] if b["kind"] == "capacity")
    holders = {h["tenant"]: h for h in capacity["holders"]}
    assert "cortex" in holders
    assert holders["cortex"]["request_ids"] == []  # another tenant's ids never leak
    as_operator = ok(hub.op.get(f"/v1/requests/{mine}/explain"))
    op_holders = {h["tenant"]: h for b in as_operator["bindings"] for h in b["holders"]}
    assert op_holders["cortex"]["request_ids"] == [blocker]
    assert hub.get(mine)["queue_position"]["gpu_class"] >= 1


def run_day(hub: Hub, seed: int = 7) -> tuple[list[dict], dict[int, datetime]]:
    """Random arrivals for 24 simulated hours; invariants are checked after every cycle."""
    rng = random.Random(seed)
    hub.interval = timedelta(minutes=10)  # the runner's timer; events wake it in between
    start = hub.clock.now()
    arrivals = []
    t = start
    while t < start + timedelta(hours=20):
        t += timedelta(minutes=rng.expovariate(1 / 12))
        tenant = rng.choice(["acme", "acme", "blue", "cortex", "cortex"])
        gpus = rng.choice([1, 2, 4, 8, 8, 16])
        arrivals.append((t, tenant, gpus, rng.choice([1800, 3600, 2 * 3600, 4 * 3600])))
    ids: dict[int, tuple[str, float]] = {}
    first_eta: dict[int, datetime] = {}

    def listed() -> dict[int, dict]:
        page = ok(hub.op.get("/v1/requests", params={"limit": 500}))["items"]
        return {r["id"]: r for r in page}

    for when, tenant, gpus, duration in arrivals:
        hub.run_until(when)
        body = {"gpu_class": H, "gpus": gpus, "duration": duration}
        if gpus == 16:
            body["gpus_per_node"] = 8
        r = hub.post(tenant, "/v1/requests", body)
        assert r.status_code == 201, r.text
        ids[r.json()["id"]] = (tenant, rng.uniform(0.3, 1.2))
        hub.cycle()
        now_listed = listed()
        for rid, (who, fraction) in ids.items():
            got = now_listed[rid]
            # The first start promised on guaranteed quota (borrowed starts promise nothing).
            res = got.get("reservation") or {}
            if got["planned_start"] and res.get("kind") == "guaranteed" and rid not in first_eta:
                first_eta[rid] = ts(got["planned_start"])
            if got["state"] in ("pending", "planned"):
                assert got["reason"] and got["reason"]["code"], got
            if got["state"] == "active" and fraction < 1:
                ran = (hub.clock.now() - ts(got["started_at"])).total_seconds()
                if ran >= fraction * got["duration_s"]:
                    ok(hub.post(who, f"/v1/requests/{rid}/complete"))
    hub.run_until(start + timedelta(hours=24))
    final = listed()
    return [final[rid] for rid in ids], first_eta


def test_a_day_of_a_small_hub(hub):
    finals, _ = run_day(hub)
    states = {s: sum(1 for f in finals if f["state"] == s) for s in {f["state"] for f in finals}}
    assert states.get("completed", 0) > 20 and states.get("expired", 0) > 5, states
    assert set(states) <= {"completed", "expired", "pending", "planned", "active"}
    assert hub.cycles > 100
    preempted = [
        e
        for f in finals
        for e in ok(hub.op.get(f"/v1/requests/{f['id']}/events"))
        if e["to_state"] == "preempted"
    ]
    assert preempted, "the day should include reclaims of borrowed GPUs"


def test_guaranteed_etas_never_slip(hub):
    """A request once planned on guaranteed quota starts no later than that first promise:
    only early finishes move it, and only earlier. (Borrowed starts promise nothing: a
    guaranteed arrival may push them.)"""
    finals, first_eta = run_day(hub)
    guaranteed = [f for f in finals if f["started_at"] and f["id"] in first_eta]
    assert len(guaranteed) > 30, len(guaranteed)
    late = [f["id"] for f in guaranteed if ts(f["started_at"]) > first_eta[f["id"]]]
    # Promises are dropped only when the planner cannot keep them (measured: 0-2 of ~40 a
    # day, where a promised start is blocked by running work; see docs/planning-engine.md).
    # Without promises the same day had 5 of 42 late; with them, 1 of 49 (one run each).
    assert len(late) <= 0.1 * len(guaranteed), late
