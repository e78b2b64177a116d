"""The server's gpupool_* metrics, scraped from /metrics over the test client after a scripted
scenario: state read from the database, and the cycle's and the pushes' own events."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from metrics.server import ServerMetrics
from scheduler.clock import ManualClock
from scheduler.cycle import CycleResult
from scheduler.settings import Settings
from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.api.usage_helpers import agent, node_of, passes, push
from tests.conftest import START

__all__ = ["agent"]

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: Every label a gpupool_* series may carry (``le`` is the histogram bucket's).
BOUNDED_LABELS = {
    "tenant",
    "gpu_class",
    "state",
    "kind",
    "phase",
    "planner",
    "status",
    "action",
    "attribution",
    "le",
}


def scrape(client: Any) -> tuple[Series, dict[str, str]]:
    """Every gpupool_* sample of /metrics, and each family's type."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    series: Series = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(r.text):
        if not family.name.startswith("gpupool_"):
            continue
        types[family.name] = family.type
        for s in family.samples:
            series[(s.name, frozenset(s.labels.items()))] = s.value
    return series, types


def value(series: Series, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in series, (
        f"{name}{labels} not exported; have {sorted(k for k in series if k[0] == name)}"
    )
    return series[key]


H100 = "H100-80GB"


@pytest.fixture
def scenario(op: Any, cycle: Any, clock: ManualClock, agent: dict[str, str]) -> dict[str, Any]:
    """09:00 two H100 nodes and a drained A100 node; acme (guaranteed 8, budget 100 GPU-h)
    and rival (no guarantee) each ask for 8 GPUs, gamma (guaranteed 8) comes at 09:30.
    The first cycle runs at 09:10; acme's node then reads 1 % for 31 minutes, and a GPU of an
    unregistered node 50 % once."""
    make_pool(op, nodes=2, gpus=8)
    ok(op.post("/v1/gpu-classes", json={"name": "A100-40GB"}), 201)
    ok(op.post("/v1/nodes", json={"name": "a100-0", "gpu_class": "A100-40GB", "gpus": 4}), 201)
    ok(op.post("/v1/nodes/a100-0/drain"))
    acme = make_tenant(op, "acme", guaranteed=8, limit=16, budget_gpu_hours=100)
    rival = make_tenant(op, "rival", guaranteed=0, limit=8)
    a = submit(op, acme, gpus=8, duration=7200)["id"]
    b = submit(op, rival, gpus=8, duration=7200)["id"]
    clock.advance(600)  # both wait 10 minutes for the first cycle
    cycle()
    [a_node] = node_of(op, a, acme)
    second = submit(op, acme, gpus=8, duration=3600)["id"]  # no room: it waits
    cycle()
    clock.set(START + timedelta(minutes=30))
    gamma = make_tenant(op, "gamma", guaranteed=8, limit=8)
    c = submit(op, gamma, gpus=8, duration=3600)["id"]
    cycle()  # reclaims rival's borrowed GPUs (they have run the 10 minute minimum)
    clock.set(START + timedelta(minutes=42))
    first = START + timedelta(minutes=10, seconds=10)
    push(op, a_node, passes(a_node, first, 187, range(8), 1.0), headers=agent)  # to 09:41:10
    # A node the hub does not know (yet): its GPU's use is charged to nobody.
    push(
        op, "spare-0", passes("spare-0", first + timedelta(minutes=31), 1, [0], 50.0), headers=agent
    )
    return {"acme": acme, "rival": rival, "gamma": gamma, "a": a, "b": b, "c": c, "second": second}


def test_state_from_the_database(client, scenario):
    series, _ = scrape(client)
    assert value(series, "gpupool_capacity_gpus", gpu_class=H100) == 16
    assert value(series, "gpupool_capacity_gpus", gpu_class="A100-40GB") == 4
    assert value(series, "gpupool_schedulable_gpus", gpu_class="A100-40GB") == 0
    assert value(series, "gpupool_schedulable_gpus", gpu_class=H100) == 16
    assert value(series, "gpupool_quota_guaranteed_gpus", tenant="gamma", gpu_class=H100) == 8
    assert value(series, "gpupool_quota_limit_gpus", tenant="acme", gpu_class=H100) == 16
    assert (
        value(series, "gpupool_allocated_gpus", tenant="acme", gpu_class=H100, kind="guaranteed")
        == 8
    )
    assert (
        value(series, "gpupool_allocated_gpus", tenant="gamma", gpu_class=H100, kind="guaranteed")
        == 8
    )
    assert (
        "gpupool_allocated_gpus",
        frozenset({("tenant", "rival"), ("gpu_class", H100), ("kind", "borrowed")}),
    ) not in series
    assert value(series, "gpupool_requests", tenant="acme", gpu_class=H100, state="active") == 1
    assert value(series, "gpupool_requests", tenant="acme", gpu_class=H100, state="planned") == 1
    # rival was preempted and requeued: it waits again, since 09:00.
    assert value(series, "gpupool_pending_workloads", tenant="rival", gpu_class=H100) == 1
    assert value(series, "gpupool_pending_gpus", tenant="acme", gpu_class=H100) == 8
    assert (
        value(series, "gpupool_oldest_pending_wait_seconds", tenant="rival", gpu_class=H100)
        == 42 * 60
    )
    assert (
        value(series, "gpupool_oldest_pending_wait_seconds", tenant="acme", gpu_class=H100)
        == 32 * 60
    )


def test_budget_in_gpu_seconds(client, scenario):
    series, _ = scrape(client)
    labels = {"tenant": "acme", "gpu_class": H100}
    assert value(series, "gpupool_budget_gpu_seconds", **labels) == 100 * 3600
    # 8 GPUs held 09:10-09:42; committed through the planned end (2 hours).
    assert value(series, "gpupool_budget_used_gpu_seconds", **labels) == pytest.approx(8 * 32 * 60)
    assert value(series, "gpupool_budget_remaining_gpu_seconds", **labels) == pytest.approx(
        (100 - 16) * 3600
    )
    assert not any(
        k[0] == "gpupool_budget_gpu_seconds" and ("tenant", "rival") in k[1] for k in series
    )


def test_usage_and_idle_from_the_samples(client, scenario):
    series, _ = scrape(client)
    labels = {"tenant": "acme", "gpu_class": H100}
    assert value(series, "gpupool_used_gpus", **labels) == pytest.approx(8 * 0.01)
    assert value(series, "gpupool_reporting_gpus", gpu_class=H100) == 8
    assert value(series, "gpupool_idle_reserved_gpus", **labels) == 8
    assert value(series, "gpupool_idle_reservations_total", action="none", **labels) == 1
    assert value(series, "gpupool_usage_samples_total", attribution="node") == 187 * 8
    assert value(series, "gpupool_usage_samples_total", attribution="request") == 0
    assert value(series, "gpupool_usage_samples_total", attribution="none") == 1
    assert value(series, "gpupool_unattributed_used_gpus", gpu_class="") == 0.5
    assert value(series, "gpupool_reporting_gpus", gpu_class="") == 1
    assert value(series, "gpupool_usage_duplicate_samples_total") == 0


def test_samples_stop_counting_as_current_when_stale(client, clock, scenario):
    clock.advance(600)
    series, _ = scrape(client)
    assert not any(k[0] in ("gpupool_used_gpus", "gpupool_reporting_gpus") for k in series)
    # The idle episode is a fact about the reservation, not about fresh samples.
    assert value(series, "gpupool_idle_reserved_gpus", tenant="acme", gpu_class=H100) == 8


def test_cycle_events(client, scenario):
    series, _ = scrape(client)
    cycles = 3
    by_status = {
        dict(labels)["status"]: v
        for (name, labels), v in series.items()
        if name == "gpupool_cycles_total" and dict(labels)["planner"] == "cpsat"
    }
    assert sum(by_status.values()) == cycles
    assert set(by_status) <= {"OPTIMAL", "FEASIBLE"}
    assert value(series, "gpupool_cycle_duration_seconds_count") == cycles
    for phase in ("advance", "snapshot", "solve", "validate", "apply"):
        assert value(series, "gpupool_cycle_phase_duration_seconds_count", phase=phase) == cycles
        assert value(series, "gpupool_cycle_phase_duration_seconds_sum", phase=phase) >= 0
    assert value(series, "gpupool_solver_duration_seconds_count", planner="cpsat") == cycles
    gap = value(series, "gpupool_solver_gap")  # CP-SAT proves a bound: a finite gap
    assert not math.isnan(gap) and 0 <= gap < 1
    assert (
        value(series, "gpupool_last_cycle_timestamp_seconds")
        == (START + timedelta(minutes=30)).timestamp()
    )
    assert value(series, "gpupool_leader") == 1
    assert value(series, "gpupool_cycle_failures_total") == 0
    # Admissions and their waits: acme and rival at 09:10 after 10 minutes, gamma at once.
    for tenant in ("acme", "rival", "gamma"):
        assert value(series, "gpupool_admitted_workloads_total", tenant=tenant, gpu_class=H100) == 1
    wait = {"tenant": "rival", "gpu_class": H100}
    assert value(series, "gpupool_admission_wait_time_seconds_count", **wait) == 1
    assert value(series, "gpupool_admission_wait_time_seconds_sum", **wait) == 600
    assert value(series, "gpupool_admission_wait_time_seconds_bucket", le="300.0", **wait) == 0
    assert value(series, "gpupool_admission_wait_time_seconds_bucket", le="900.0", **wait) == 1
    gamma = {"tenant": "gamma", "gpu_class": H100}
    assert value(series, "gpupool_admission_wait_time_seconds_sum", **gamma) == 0
    assert value(series, "gpupool_preempted_workloads_total", tenant="rival", gpu_class=H100) == 1


def test_a_requeued_request_waits_from_its_requeue(client, cycle, clock, scenario, op):
    """rival, preempted at 09:30, starts again when gamma's hour ends at 10:30."""
    clock.set(START + timedelta(minutes=90))
    ok(op.post(f"/v1/requests/{scenario['a']}/cancel", headers=scenario["acme"]))
    cycle()
    cycle()
    series, _ = scrape(client)
    wait = {"tenant": "rival", "gpu_class": H100}
    assert value(series, "gpupool_admitted_workloads_total", **wait) == 2
    assert value(series, "gpupool_admission_wait_time_seconds_sum", **wait) == 600 + 60 * 60


def test_names_units_and_bounded_labels(client, scenario):
    series, types = scrape(client)
    for name, kind in types.items():
        if kind == "counter":
            assert any(n == f"{name}_total" for n, _ in series), name
        else:
            assert not name.endswith("_total"), name
    for name, labels in series:
        unknown = {k for k, _ in labels} - BOUNDED_LABELS
        assert not unknown, f"{name} has unbounded labels {unknown}"
        if name.endswith("_created"):
            continue
        assert not name.endswith(("_hours", "_minutes", "_milliseconds", "_percent")), name
    # Kueue's names where the meaning is the same.
    for kueue_like in (
        "gpupool_pending_workloads",
        "gpupool_admitted_workloads",
        "gpupool_admission_wait_time_seconds",
        "gpupool_preempted_workloads",
    ):
        assert kueue_like in types


def test_a_metrics_fault_never_fails_a_cycle(tmp_path, caplog):
    broken = create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    metrics = ServerMetrics(broken, ManualClock(START), Settings())
    metrics.observe_cycle(CycleResult(started_at=START, planner="greedy", status="FEASIBLE"))
    assert "could not record the cycle's metrics" in caplog.text
