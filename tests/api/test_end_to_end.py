"""Issue 2's end-to-end path over HTTP: operator sets up, tenant submits, the cycle plans,
another tenant sees nothing, cancelling frees the GPUs for the next request."""

from __future__ import annotations

from tests.api.helpers import make_pool, make_tenant, ok, submit


def test_submit_plan_isolate_cancel(op, cycle, clock):
    make_pool(op, nodes=2, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    rival = make_tenant(op, "rival", guaranteed=0, limit=16)

    first = submit(op, acme, gpus=16, gpus_per_node=8, duration=7200)
    assert first["state"] == "pending"
    assert first["tenant"] == "acme"
    cycle()
    got = ok(op.get(f"/v1/requests/{first['id']}", headers=acme))
    assert got["state"] == "active"
    assert got["reservation"]["state"] == "active"
    assert sorted(a["node"] for a in got["reservation"]["allocation"]) == ["node-0", "node-1"]
    assert all(a["gpus"] == 8 for a in got["reservation"]["allocation"])
    assert got["planned_start"] == got["started_at"]

    # The rival's request must wait: the whole pool is reserved for two hours.
    second = submit(op, rival, gpus=8, duration=3600)
    cycle()
    waiting = ok(op.get(f"/v1/requests/{second['id']}", headers=rival))
    assert waiting["state"] == "planned"
    assert waiting["planned_start"].startswith("2026-11-23T11:00")

    # Another tenant can neither see nor cancel acme's request: 404, not 403.
    assert op.get(f"/v1/requests/{first['id']}", headers=rival).status_code == 404
    denied = op.post(f"/v1/requests/{first['id']}/cancel", headers=rival)
    assert denied.status_code == 404
    assert denied.headers["content-type"] == "application/problem+json"
    listed = ok(op.get("/v1/requests", headers=rival))
    assert [r["id"] for r in listed["items"]] == [second["id"]]
    assert ok(op.get(f"/v1/requests/{first['id']}", headers=acme))["state"] == "active"

    # Cancelling frees the GPUs at once: the next cycle starts the rival's request now.
    clock.advance(300)
    cancelled = ok(op.post(f"/v1/requests/{first['id']}/cancel", headers=acme))
    assert cancelled["state"] == "cancelled"
    assert cancelled["reservation"]["state"] == "ended"
    assert cancelled["reservation"]["end_reason"] == "cancelled"
    cycle()
    started = ok(op.get(f"/v1/requests/{second['id']}", headers=rival))
    assert started["state"] == "active"
    assert started["started_at"].startswith("2026-11-23T09:05")

    plan = ok(op.get("/v1/plan", params={"start": "2026-11-23T08:00:00Z"}))
    states = sorted((r["request_id"], r["state"]) for r in plan["reservations"])
    assert states == [(first["id"], "ended"), (second["id"], "active")]
    assert plan["last_cycle"]["violations"] == 0


def test_completion_frees_gpus_and_window_end_expires(op, cycle, clock):
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    a = submit(op, acme, gpus=8, duration=3600)
    b = submit(op, acme, gpus=8, duration=1800)
    cycle()
    assert ok(op.get(f"/v1/requests/{a['id']}", headers=acme))["state"] == "active"
    assert ok(op.get(f"/v1/requests/{b['id']}", headers=acme))["state"] == "planned"

    clock.advance(600)
    done = ok(op.post(f"/v1/requests/{a['id']}/complete", headers=acme, json={"detail": "exit 0"}))
    assert done["state"] == "completed"
    cycle()
    b_now = ok(op.get(f"/v1/requests/{b['id']}", headers=acme))
    assert b_now["state"] == "active"
    assert b_now["started_at"].startswith("2026-11-23T09:10")

    clock.advance(1800)
    cycle()
    b_end = ok(op.get(f"/v1/requests/{b['id']}", headers=acme))
    assert b_end["state"] == "expired"
    assert b_end["reason"]["code"] == "window_ended"
    events = ok(op.get(f"/v1/requests/{b['id']}/events", headers=acme))
    assert [e["to_state"] for e in events if e["kind"] == "state"] == [
        "planned",
        "active",
        "expired",
    ]
