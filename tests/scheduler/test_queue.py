"""Queue positions per tenant and per GPU class."""

from __future__ import annotations

from tests.api.helpers import make_pool, make_tenant, ok, submit


def test_queue_positions(op, cycle):
    make_pool(op, nodes=1, gpus=8)
    a = make_tenant(op, "a", guaranteed=0, limit=8)
    b = make_tenant(op, "b", guaranteed=0, limit=8)
    r1 = submit(op, a, gpus=8, duration=3600)["id"]
    r2 = submit(op, a, gpus=8, duration=3600)["id"]
    r3 = submit(op, b, gpus=8, duration=3600)["id"]
    r4 = submit(op, a, gpus=8, duration=3600)["id"]
    r5 = submit(op, b, gpus=8, duration=3600, not_before="2026-12-31T00:00:00Z")["id"]
    cycle()
    got = {r: ok(op.get(f"/v1/requests/{r}")) for r in (r1, r2, r3, r4, r5)}
    assert got[r1]["state"] == "active" and got[r1]["queue_position"] is None
    assert [got[r]["state"] for r in (r2, r3, r4, r5)] == ["planned"] * 3 + ["pending"]
    starts = [got[r]["planned_start"] for r in (r2, r3, r4)]
    assert starts == sorted(starts)
    positions = {
        r: (got[r]["queue_position"]["gpu_class"], got[r]["queue_position"]["tenant"])
        for r in (r2, r3, r4, r5)
    }
    assert positions == {r2: (1, 1), r3: (2, 1), r4: (3, 2), r5: (4, 2)}
    assert all(got[r]["queue_position"]["waiting_in_class"] == 4 for r in (r2, r3, r4, r5))
    # a tenant sees its own position through explain as well
    why = ok(op.get(f"/v1/requests/{r4}/explain", headers=a))
    assert why["queue_position"] == {"tenant": 2, "gpu_class": 3, "waiting_in_class": 4}
