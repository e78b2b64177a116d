"""GET /v1/usage over a scripted scenario: allocated time from the reservations (manual clock),
used and idle time from pushed samples, every figure checked against a hand computation."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest

from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.api.usage_helpers import agent, node_of, passes, pod, push
from tests.conftest import START

__all__ = ["agent"]

T = START  # 2026-11-23 09:00 UTC, a Monday


@pytest.fixture
def hub(op: Any, cycle: Any, clock: Any, agent: dict[str, str]) -> dict[str, Any]:
    """Two 8-GPU nodes. acme holds a whole node (8 GPUs, 09:00 until it completes at 10:30);
    rival holds 4 GPUs of the other node (09:00-10:00, then its window ends)."""
    make_pool(op, nodes=2, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=16)
    rival = make_tenant(op, "rival", guaranteed=8, limit=16)
    a = submit(op, acme, gpus=8, duration=7200)["id"]
    b = submit(op, rival, gpus=4, duration=3600)["id"]
    cycle()
    [a_node] = node_of(op, a, acme)
    [b_node] = node_of(op, b, rival)
    assert a_node != b_node

    clock.advance(20 * 60)  # 09:20: the samples so far may arrive
    # acme's node: 8 GPUs, its pod on GPU 0 only (the node is wholly acme's, so all count).
    # 60 passes at 60 % (09:00:10-09:10:00), then 60 passes at 2 % (09:10:10-09:20:00).
    a_pods = {0: [pod(a, "acme")]}
    busy = passes(a_node, T + timedelta(seconds=10), 60, range(8), 60.0, pods=a_pods)
    quiet = passes(a_node, T + timedelta(seconds=610), 60, range(8), 2.0, pods=a_pods)
    push(op, a_node, busy + quiet, headers=agent)
    # rival's node: GPUs 0-3 run rival's pods at 100 % for 31 passes (09:00:10-09:05:10);
    # GPUs 4-7 have no pods (free GPUs beside a smaller reservation: nobody's) at 0 %, except
    # in the last pass, where GPU 4 runs a pod claiming acme's request (which holds no GPU on
    # this node: a mismatch) at 30 %.
    b_pods: dict[int, list[dict[str, Any]]] = {g: [pod(b, "rival")] for g in range(4)}
    first = passes(
        b_node,
        T + timedelta(seconds=10),
        30,
        range(8),
        0.0,
        pods=b_pods,
        utils=dict.fromkeys(range(4), 100.0),
    )
    last = passes(
        b_node,
        T + timedelta(seconds=310),
        1,
        range(8),
        0.0,
        pods={**b_pods, 4: [pod(a, "acme", "stray")]},
        utils={**dict.fromkeys(range(4), 100.0), 4: 30.0},
    )
    answer = push(op, b_node, first + last, headers=agent)
    assert answer["mismatches"] == 1

    clock.set(T + timedelta(minutes=90))  # 10:30
    cycle()  # rival's window (09:00-10:00) is closed at its end
    ok(op.post(f"/v1/requests/{a}/complete", headers=acme))
    return {"acme": acme, "rival": rival, "a": a, "b": b, "a_node": a_node, "b_node": b_node}


# The hand computation (GPU-seconds; samples stand for the 10 s before their ts):
ACME = {
    "allocated_gpu_s": 8 * 5400,  # 8 GPUs, 09:00-10:30
    "measured_gpu_s": 8 * 1200,  # 120 passes x 10 s on 8 GPUs
    "used_gpu_s": 8 * 600 * 0.60 + 8 * 600 * 0.02,  # 2880 + 96
    "idle_gpu_s": 8 * 600,  # the 2 % half is below the 5 % threshold
    "energy_j": 300.0 * 8 * 1200,
    "samples": 8 * 120,
}
RIVAL = {
    "allocated_gpu_s": 4 * 3600,  # 4 GPUs, 09:00-10:00
    "measured_gpu_s": 4 * 310,
    "used_gpu_s": 4 * 310 * 1.0,
    "idle_gpu_s": 0.0,
    "energy_j": 300.0 * 4 * 310,
    "samples": 4 * 31,
}
NOBODY = {
    "allocated_gpu_s": 0.0,
    "measured_gpu_s": 4 * 310,
    "used_gpu_s": 10 * 0.30,  # GPU 4 in the last pass
    "idle_gpu_s": 4 * 310 - 10,
    "energy_j": 300.0 * 4 * 310,
    "samples": 4 * 31,
}


def figures(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ACME}


def approx(expected: dict[str, float]) -> dict[str, Any]:
    return {k: pytest.approx(v, abs=1e-6) for k, v in expected.items()}


def test_usage_by_tenant_equals_the_hand_computation(op, hub):
    got = ok(
        op.get(
            "/v1/usage",
            params={"start": "2026-11-23T09:00:00Z", "end": "2026-11-23T11:00:00Z"},
        )
    )
    assert got["start"] == "2026-11-23T09:00:00Z" and got["end"] == "2026-11-23T11:00:00Z"
    rows = {(r["tenant"], r["attributed"]): r for r in got["rows"]}
    assert set(rows) == {("acme", True), ("rival", True), (None, False)}
    assert figures(rows[("acme", True)]) == approx(ACME)
    assert figures(rows[("rival", True)]) == approx(RIVAL)
    assert figures(rows[(None, False)]) == approx(NOBODY)
    assert rows[("acme", True)]["utilisation"] == pytest.approx(ACME["used_gpu_s"] / 9600)
    total = {k: ACME[k] + RIVAL[k] + NOBODY[k] for k in ACME}
    assert figures(got["totals"]) == approx(total)
    # Only the dimensions asked for are in a row.
    assert "gpu_class" not in got["rows"][0] and "day" not in got["rows"][0]


def test_a_tenant_sees_its_own_usage_only(op, hub):
    got = ok(op.get("/v1/usage", params={"start": "2026-11-23T09:00:00Z"}, headers=hub["acme"]))
    assert [r["tenant"] for r in got["rows"]] == ["acme"]
    assert figures(got["rows"][0]) == approx(ACME)
    assert figures(got["totals"]) == approx(ACME)
    by_res = ok(op.get("/v1/usage", params={"group_by": "reservation"}, headers=hub["rival"]))
    assert [(r["tenant"], r["request_id"]) for r in by_res["rows"]] == [("rival", hub["b"])]
    refused = op.get("/v1/usage", params={"tenant": "acme"}, headers=hub["rival"])
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"field": "tenant", "reason": "a tenant key sees its own usage only"}
    ]
    csv_text = op.get("/v1/usage", params={"format": "csv"}, headers=hub["rival"]).text
    assert "acme" not in csv_text


def test_group_by_reservation_and_class(op, hub):
    got = ok(op.get("/v1/usage", params={"group_by": "reservation"}))
    rows = [r for r in got["rows"] if r["attributed"]]
    assert [(r["tenant"], r["request_id"], r["gpus"], r["gpu_class"]) for r in rows] == sorted(
        [("acme", hub["a"], 8, "H100-80GB"), ("rival", hub["b"], 4, "H100-80GB")],
        key=lambda t: t[1],
    )
    by_request = {r["request_id"]: r for r in rows}
    assert figures(by_request[hub["a"]]) == approx(ACME)
    assert figures(by_request[hub["b"]]) == approx(RIVAL)

    by_class = ok(op.get("/v1/usage", params={"group_by": "gpu_class"}))
    charged = [r for r in by_class["rows"] if r["attributed"]]
    assert [r["gpu_class"] for r in charged] == ["H100-80GB"]
    assert figures(charged[0]) == approx({k: ACME[k] + RIVAL[k] for k in ACME})
    assert ok(op.get("/v1/usage", params={"gpu_class": "A100-40GB"}))["rows"] == []


def test_resending_a_batch_changes_nothing(op, hub, agent):
    before = ok(op.get("/v1/usage", params={"group_by": "reservation"}))
    again = passes(hub["a_node"], T + timedelta(seconds=10), 60, range(8), 60.0)
    answer = push(op, hub["a_node"], again, headers=agent)
    assert answer["duplicates"] == 480 and answer["stored"] == 0
    assert ok(op.get("/v1/usage", params={"group_by": "reservation"})) == before


def test_csv_export(op, hub):
    r = op.get(
        "/v1/usage",
        params={"format": "csv", "group_by": "tenant,gpu_class", "start": "2026-11-23T00:00:00Z"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == [
        "tenant",
        "gpu_class",
        "attributed",
        "allocated_gpu_s",
        "measured_gpu_s",
        "used_gpu_s",
        "idle_gpu_s",
        "energy_j",
        "samples",
        "utilisation",
    ]
    rows = {(t["tenant"], t["attributed"]): t for t in table}
    acme = rows[("acme", "true")]
    assert acme["gpu_class"] == "H100-80GB"
    assert float(acme["allocated_gpu_s"]) == ACME["allocated_gpu_s"]
    assert float(acme["used_gpu_s"]) == pytest.approx(ACME["used_gpu_s"])
    assert float(rows[("rival", "true")]["measured_gpu_s"]) == RIVAL["measured_gpu_s"]
    assert rows[("", "false")]["samples"] == str(NOBODY["samples"])


def test_days_split_at_midnight_exactly(op, cycle, clock, agent):
    """A reservation 23:00-01:00: an hour on each day, and the sample that straddles midnight
    is split between the days."""
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    rid = submit(op, acme, gpus=8, duration=7200, not_before="2026-11-23T23:00:00Z")["id"]
    cycle()
    clock.set(T.replace(hour=23))
    cycle()
    assert ok(op.get(f"/v1/requests/{rid}", headers=acme))["state"] == "active"
    clock.set(T.replace(hour=23) + timedelta(hours=1, minutes=1))
    # 23:59:55 (stands for 23:59:45-23:59:55) and 00:00:05 (23:59:55-00:00:05), 50 %.
    first = T.replace(hour=23, minute=59, second=55)
    push(op, "node-0", passes("node-0", first, 2, range(8), 50.0), headers=agent)
    clock.set(T + timedelta(days=1, hours=3))
    cycle()  # the window ended at 01:00
    got = ok(
        op.get(
            "/v1/usage",
            params={
                "group_by": "day",
                "start": "2026-11-23T00:00:00Z",
                "end": "2026-11-25T00:00:00Z",
            },
            headers=acme,
        )
    )
    days = {r["day"]: r for r in got["rows"]}
    assert list(days) == ["2026-11-23", "2026-11-24"]
    assert days["2026-11-23"]["allocated_gpu_s"] == 8 * 3600
    assert days["2026-11-24"]["allocated_gpu_s"] == 8 * 3600
    assert days["2026-11-23"]["measured_gpu_s"] == pytest.approx(8 * 15)
    assert days["2026-11-24"]["measured_gpu_s"] == pytest.approx(8 * 5)
    assert days["2026-11-23"]["used_gpu_s"] == pytest.approx(8 * 15 * 0.5)
    assert days["2026-11-23"]["samples"] == 8 and days["2026-11-24"]["samples"] == 8


def test_an_open_reservation_counts_until_now_and_the_range_widens_to_hours(
    op, cycle, clock, agent
):
    make_pool(op, nodes=1, gpus=8)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    submit(op, acme, gpus=2, duration=7200)
    cycle()
    clock.advance(25 * 60)
    got = ok(op.get("/v1/usage", params={"start": "2026-11-23T09:10:00Z"}, headers=acme))
    assert got["start"] == "2026-11-23T09:00:00Z" and got["end"] == "2026-11-23T10:00:00Z"
    assert got["rows"][0]["allocated_gpu_s"] == 2 * 25 * 60
    assert got["rows"][0]["utilisation"] is None  # nothing measured


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"group_by": "week"}, "group_by", "'week' is not one of"),
        ({"group_by": "day,day"}, "group_by", "given twice"),
        ({"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T09:00:00Z"}, "end", "after start"),
        ({"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end", "at most 366"),
        ({"start": "2026-11-23T10:00:00"}, "start", "timezone"),
        ({"format": "xml"}, "format", ""),
        ({"tenant": "Not A Name"}, "tenant", ""),
    ],
)
def test_bad_report_parameters(op, params, field, reason):
    r = op.get("/v1/usage", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert field in errors, errors
    assert reason in errors[field]
