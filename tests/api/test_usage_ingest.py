"""POST /v1/usage/samples: who may push, validation, the batch limit, duplicates, attribution,
gaps and MIG instances."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from scheduler.tables import UsageBucketRow, UsageDeviceRow
from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.api.test_bad_input import assert_problem, dump
from tests.api.usage_helpers import agent, passes, pod, push, sample
from tests.conftest import START

__all__ = ["agent"]

T = START


def body(samples: list[dict[str, Any]], node: str = "node-0", interval: float = 10.0) -> dict:
    return {"node": node, "interval_s": interval, "samples": samples}


def report(op: Any, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    params.setdefault("group_by", "reservation")
    return ok(op.get("/v1/usage", params=params, headers=headers))  # type: ignore[no-any-return]


def test_the_agent_contract_body_is_accepted(op, agent, clock):
    """The body of the push contract in the agent's notes, as the agent sends it."""
    clock.advance(60)
    contract = {
        "node": "gpu-node-1",
        "interval_s": 10.0,
        "samples": [
            {
                "ts": "2026-11-23T09:00:50Z",
                "gpu_uuid": "GPU-5a1c",
                "gpu_index": 0,
                "model": "NVIDIA H100 80GB HBM3",
                "mig_instance": None,
                "util_pct": 87.0,
                "fb_used_mib": 1024,
                "fb_total_mib": 81559,
                "power_w": 312.5,
                "temp_c": 61,
                "pods": [
                    {
                        "namespace": "acme",
                        "pod": "train-0",
                        "container": "main",
                        "pod_uid": "6f1e",
                        "request_id": 42,
                        "used_mib": 1000,
                        "a_field_from_a_newer_agent": True,
                    }
                ],
            }
        ],
    }
    r = op.post("/v1/usage/samples", json=contract, headers=agent)
    assert r.status_code == 202, r.text
    assert r.json() == {
        "received": 1,
        "stored": 1,
        "duplicates": 0,
        "attributed": {"request": 0, "node": 0, "none": 1},
        "mismatches": 1,  # request 42 holds no GPUs there
        "idle": [],
    }


def test_who_may_push(op, agent, clock):
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme")
    one = body([sample("node-0", 0, T, 50.0)])
    assert op.post("/v1/usage/samples", json=one, headers={"Authorization": ""}).status_code == 401
    denied = op.post("/v1/usage/samples", json=one, headers=acme)
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert op.post("/v1/usage/samples", json=one).status_code == 202  # the operator may
    assert op.post("/v1/usage/samples", json=one, headers=agent).json()["duplicates"] == 1
    # The agent token opens nothing else.
    assert op.get("/v1/usage", headers=agent).status_code == 403
    assert op.get("/v1/requests", headers=agent).status_code == 403


def test_more_than_the_batch_limit_is_413(op, agent, engine, clock):
    clock.advance(700)
    before = dump(engine)
    many = passes("node-0", T, 63, range(8), 10.0)  # 504 samples
    r = op.post("/v1/usage/samples", json=body(many), headers=agent)
    assert_problem(r, 413, None)
    assert r.json()["code"] == "too_large"
    assert "at most 500" in r.json()["detail"]
    assert dump(engine) == before
    assert op.post("/v1/usage/samples", json=body(many[:500]), headers=agent).status_code == 202


BAD_SAMPLES = [
    ("util above 100", {"util_pct": 101}, "samples.0.util_pct", "less than or equal to 100"),
    ("negative memory", {"fb_total_mib": -1}, "samples.0.fb_total_mib", "greater than or equal"),
    ("naive ts", {"ts": "2026-11-23T09:00:00"}, "samples.0.ts", "timezone"),
    ("not a time", {"ts": "yesterday"}, "samples.0.ts", ""),
    ("no uuid", {"gpu_uuid": ""}, "samples.0.gpu_uuid", "at least 1"),
    ("negative MIG id", {"mig_instance": -1}, "samples.0.mig_instance", "greater than or equal"),
    ("future ts", {"ts": "2026-11-23T09:06:00Z"}, "samples.0.ts", "ahead of the server's clock"),
    ("pods not a list", {"pods": "acme"}, "samples.0.pods", ""),
]


@pytest.mark.parametrize(
    ("case", "change", "field", "reason"), BAD_SAMPLES, ids=[c[0] for c in BAD_SAMPLES]
)
def test_bad_samples_name_the_field(op, agent, engine, case, change, field, reason):
    before = dump(engine)
    good = sample("node-0", 0, T, 50.0)
    r = op.post("/v1/usage/samples", json=body([good, good | change][::-1]), headers=agent)
    assert_problem(r, 422, field, contains=reason)
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": "often"}, "interval_s"),
        ({"node": ""}, "node"),
        ({"node": "gpu node 1"}, "node"),
        ({"node": None}, "node"),
        ({"samples": None}, "samples"),
    ],
)
def test_bad_batches_name_the_field(op, agent, change, field):
    r = op.post(
        "/v1/usage/samples", json=body([sample("node-0", 0, T, 1.0)]) | change, headers=agent
    )
    assert_problem(r, 422, field)


def test_malformed_json_is_400(op, agent):
    r = op.post(
        "/v1/usage/samples",
        content=b'{"node": ',
        headers={**agent, "Content-Type": "application/json"},
    )
    assert_problem(r, 400, None)


def test_duplicates_within_and_across_batches(op, agent, engine):
    s = [sample("node-0", 0, T, 50.0), sample("node-0", 1, T, 50.0)]
    first = push(op, "node-0", [*s, s[0]], headers=agent)
    assert (first["stored"], first["duplicates"]) == (2, 1)
    again = push(op, "node-0", s, headers=agent)
    assert (again["stored"], again["duplicates"]) == (0, 2)
    # The same GPU on another node, or a MIG instance of it, is another device.
    other = push(
        op,
        "node-1",
        [sample("node-0", 0, T, 50.0), sample("node-0", 0, T, 50.0, mig=1)],
        headers=agent,
    )
    assert other["stored"] == 2
    with Session(engine) as session:
        assert sum(b.samples for b in session.exec(select(UsageBucketRow))) == 4


@pytest.fixture
def whole_node(op, cycle, clock):
    """acme holds node-0 whole (8 GPUs) from 09:00."""
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8, duration=7200)["id"]
    cycle()
    clock.advance(3600)
    return acme, rid


def test_a_gap_caps_a_samples_weight(op, agent, whole_node):
    """A restarted agent samples 3 s after the last sample: that sample stands for 3 s, not 10.
    After a long outage a sample stands for one interval only: the gap is unmeasured."""
    acme, _ = whole_node
    times = [10, 20, 23, 33, 300]  # seconds after 09:00
    samples = [sample("node-0", 0, T + timedelta(seconds=t), 100.0) for t in times]
    push(op, "node-0", samples, headers=agent)
    row = report(op, acme)["rows"][0]
    assert row["measured_gpu_s"] == pytest.approx(10 + 10 + 3 + 10 + 10)
    assert row["used_gpu_s"] == pytest.approx(43)
    assert row["samples"] == 5


def test_the_first_sample_in_a_window_counts_only_time_inside_it(op, agent, cycle, clock):
    """A sample 4 s after the reservation opened stands for 4 s of it; a sample at the very
    start measures time before it, which is nobody's."""
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    submit(op, acme, gpus=8, duration=3600)
    cycle()
    clock.advance(600)
    got = push(
        op,
        "node-0",
        [sample("node-0", 0, T, 100.0), sample("node-0", 1, T + timedelta(seconds=4), 100.0)],
        headers=agent,
    )
    assert got["attributed"] == {"request": 0, "node": 1, "none": 1}
    assert report(op, acme)["rows"][0]["measured_gpu_s"] == pytest.approx(4)


def test_attribution_on_a_shared_node(op, agent, cycle, clock):
    """node-0 holds acme's 4 GPUs and rival's 2; 2 GPUs are free."""
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rival = make_tenant(op, "rival", guaranteed=0, limit=8)
    a = submit(op, acme, gpus=4, duration=3600)["id"]
    b = submit(op, rival, gpus=2, duration=3600)["id"]
    cycle()
    clock.advance(600)
    ts = T + timedelta(seconds=60)
    got = push(
        op,
        "node-0",
        [
            sample("node-0", 0, ts, 90.0, pods=[pod(a, "acme")]),  # by label
            sample("node-0", 1, ts, 70.0, pods=[pod(b, "rival")]),  # by label
            sample("node-0", 2, ts, 50.0, pods=[pod(a, "acme"), pod(b, "rival", "x")]),  # split
            sample("node-0", 3, ts, 40.0, pods=[pod(None, "acme")]),  # unlabelled: two holders
            sample("node-0", 4, ts, 0.0),  # no pods on a shared node: nobody's
            sample("node-0", 5, ts, 30.0, pods=[pod(999, "acme")]),  # unknown request
        ],
        headers=agent,
    )
    assert got["attributed"] == {"request": 3, "node": 0, "none": 3}
    assert got["mismatches"] == 1
    rows = {r["request_id"]: r for r in report(op)["rows"] if r["attributed"]}
    assert rows[a]["measured_gpu_s"] == pytest.approx(10 + 5)
    assert rows[a]["used_gpu_s"] == pytest.approx(9 + 2.5)
    assert rows[b]["used_gpu_s"] == pytest.approx(7 + 2.5)
    unattributed = [r for r in report(op)["rows"] if not r["attributed"]]
    assert unattributed[0]["measured_gpu_s"] == pytest.approx(30)


def test_unlabelled_pods_of_the_only_holder_count_for_it(op, agent, cycle, clock):
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    submit(op, acme, gpus=4, duration=3600)
    cycle()
    clock.advance(600)
    ts = T + timedelta(seconds=60)
    got = push(
        op,
        "node-0",
        [
            sample("node-0", 0, ts, 80.0, pods=[pod(None, "acme")]),
            sample("node-0", 1, ts, 80.0, pods=[pod(None, "someone-else")]),
            sample("node-0", 2, ts, 0.0),
        ],
        headers=agent,
    )
    assert got["attributed"] == {"request": 0, "node": 1, "none": 2}
    assert report(op, acme)["rows"][0]["used_gpu_s"] == pytest.approx(8)


def test_late_samples_of_an_ended_reservation_still_count_inside_its_window(
    op, agent, cycle, clock
):
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8, duration=3600)["id"]
    cycle()
    clock.advance(300)
    ok(op.post(f"/v1/requests/{rid}/complete", headers=acme))
    clock.advance(600)
    # Buffered during an outage: one sample inside the window, one after it ended.
    inside = sample("node-0", 0, T + timedelta(seconds=300), 50.0, pods=[pod(rid)])
    after = sample("node-0", 0, T + timedelta(seconds=310), 50.0, pods=[pod(rid)])
    got = push(op, "node-0", [inside, after], headers=agent)
    assert got["attributed"] == {"request": 1, "node": 0, "none": 1}
    assert got["mismatches"] == 1
    row = report(op, acme)["rows"][0]
    assert (row["allocated_gpu_s"], row["measured_gpu_s"]) == (8 * 300, 10)


def test_mig_instances_share_their_gpu(op, agent, whole_node, engine):
    """Three MIG instances of one GPU (memory 10, 10 and 20 GiB) count as a quarter, a quarter
    and a half of it; a whole GPU beside them counts 1."""
    acme, _ = whole_node
    ts = T + timedelta(seconds=60)
    mig = [
        sample("node-0", 0, ts, 100.0, mig=1, fb_total_mib=10240),
        sample("node-0", 0, ts, 100.0, mig=2, fb_total_mib=10240),
        sample("node-0", 0, ts, 0.0, mig=3, fb_total_mib=20480, power_w=None),
        sample("node-0", 1, ts, 50.0),
    ]
    push(op, "node-0", mig, headers=agent)
    row = report(op, acme)["rows"][0]
    assert row["measured_gpu_s"] == pytest.approx(10 * (0.25 + 0.25 + 0.5) + 10)
    assert row["used_gpu_s"] == pytest.approx(10 * 0.5 + 5)
    assert row["idle_gpu_s"] == pytest.approx(10 * 0.5)
    assert row["energy_j"] == pytest.approx(300 * 10 * 0.5 + 300 * 10)
    with Session(engine) as session:
        shares = {d.mig_key: d.share for d in session.exec(select(UsageDeviceRow))}
    assert shares == {1: 0.25, 2: 0.25, 3: 0.5, -1: 1.0}


def test_unknown_utilisation_is_neither_measured_nor_idle(op, agent, whole_node):
    acme, _ = whole_node
    push(op, "node-0", [sample("node-0", 0, T + timedelta(seconds=60), None)], headers=agent)
    row = report(op, acme)["rows"][0]
    assert (row["samples"], row["measured_gpu_s"], row["idle_gpu_s"]) == (1, 0, 0)
    assert row["energy_j"] == pytest.approx(3000)


def test_samples_from_an_unknown_host_are_stored_unattributed(op, agent, whole_node):
    got = push(
        op,
        "Lab-Box-9",
        passes("Lab-Box-9", T + timedelta(seconds=10), 3, range(2), 50.0),
        headers=agent,
    )
    assert got["attributed"] == {"request": 0, "node": 0, "none": 6}
    rows = [r for r in report(op, group_by="gpu_class")["rows"] if not r["attributed"]]
    assert rows == [
        {
            "gpu_class": "",
            "attributed": False,
            "allocated_gpu_s": 0.0,
            "measured_gpu_s": 60.0,
            "used_gpu_s": 30.0,
            "idle_gpu_s": 0.0,
            "energy_j": 18000.0,
            "samples": 6,
            "utilisation": 0.5,
        }
    ]


def test_an_empty_batch_is_accepted(op, agent):
    assert ok(op.post("/v1/usage/samples", json=body([]), headers=agent), 202)["received"] == 0
