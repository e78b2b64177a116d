"""The /metrics text: DCGM-exporter names, units and labels, and the agent's health."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics.agent.attribution import Snapshot
from metrics.agent.collector import DCGM_LABELS, AgentCollector, AgentStatus
from metrics.agent.model import NodeReading
from tests.metrics.fakes import GIB, MIB, example_snapshot

Labels = dict[str, str]


def status(snap: Snapshot | None, **overrides: object) -> AgentStatus:
    values: dict[str, object] = {
        "snapshot": snap,
        "samples_buffered": 12,
        "dropped_buffer_full": 3,
        "dropped_rejected": 1,
        "pushed": 500,
        "push_failures": 4,
        "last_push_success": 1_800_000_000.0,
        "last_sample": 1_800_000_010.0,
        "pod_lookup_failures": 2,
    }
    values.update(overrides)
    return AgentStatus(**values)  # type: ignore[arg-type]


def scrape(agent_status: AgentStatus) -> dict[str, list[tuple[Labels, float]]]:
    registry = CollectorRegistry()
    registry.register(AgentCollector("gpu-node-1", lambda: agent_status))
    text = generate_latest(registry).decode()
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def series(
    metrics: dict[str, list[tuple[Labels, float]]], name: str, **match: str
) -> list[tuple[Labels, float]]:
    return [(lab, v) for lab, v in metrics[name] if all(lab.get(k) == x for k, x in match.items())]


def test_whole_gpu_metrics_have_dcgm_names_units_and_labels_per_pod() -> None:
    metrics = scrape(status(example_snapshot()))
    util = series(metrics, "DCGM_FI_DEV_GPU_UTIL", gpu="0")
    assert [(lab["namespace"], lab["pod"], lab["container"], v) for lab, v in util] == [
        ("acme", "train-0", "main", 87.0),
        ("beta", "infer-1", "srv", 87.0),
    ]
    labels = util[0][0]
    assert set(labels) == set(DCGM_LABELS)
    assert labels == {
        "gpu": "0",
        "UUID": "GPU-a",
        "device": "nvidia4",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "gpu-node-1",
        "GPU_I_PROFILE": "",
        "GPU_I_ID": "",
        "container": "main",
        "namespace": "acme",
        "pod": "train-0",
    }
    one = {"gpu": "0", "pod": "train-0"}
    assert series(metrics, "DCGM_FI_DEV_FB_USED", **one)[0][1] == 30 * GIB / MIB  # MiB
    assert series(metrics, "DCGM_FI_DEV_FB_FREE", **one)[0][1] == 49 * GIB / MIB
    assert series(metrics, "DCGM_FI_DEV_POWER_USAGE", **one)[0][1] == 312.5  # W
    assert series(metrics, "DCGM_FI_DEV_GPU_TEMP", **one)[0][1] == 61  # C
    assert series(metrics, "DCGM_FI_DEV_SM_CLOCK", **one)[0][1] == 1980  # MHz
    assert series(metrics, "DCGM_FI_DEV_MEM_CLOCK", **one)[0][1] == 2619
    assert series(metrics, "DCGM_FI_DEV_MEM_COPY_UTIL", **one)[0][1] == 40
    assert series(metrics, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", **one)[0][1] == 9e6  # mJ
    # Profiling ratios, as dashboard 12239's utilisation panels read them.
    assert series(metrics, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", **one)[0][1] == 0.9
    assert series(metrics, "DCGM_FI_PROF_SM_ACTIVE", **one)[0][1] == 0.8
    assert series(metrics, "DCGM_FI_PROF_SM_OCCUPANCY", **one)[0][1] == 0.5
    assert series(metrics, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", **one)[0][1] == 0.6
    assert series(metrics, "DCGM_FI_PROF_DRAM_ACTIVE", **one)[0][1] == 0.3


def test_mig_instances_carry_gpu_instance_labels() -> None:
    metrics = scrape(status(example_snapshot()))
    [(labels, used)] = series(metrics, "DCGM_FI_DEV_FB_USED", gpu="1")
    assert (labels["GPU_I_ID"], labels["GPU_I_PROFILE"], labels["pod"]) == (
        "3",
        "3g.40gb",
        "notebook",
    )
    assert used == 2 * 1024
    # Power belongs to the physical GPU: one series without instance labels or pods.
    [(power_labels, watts)] = series(metrics, "DCGM_FI_DEV_POWER_USAGE", gpu="1")
    assert (power_labels["GPU_I_ID"], power_labels["pod"], watts) == ("", "", 100.0)
    # Utilisation is not reported in MIG mode: no series rather than a false zero.
    assert series(metrics, "DCGM_FI_DEV_GPU_UTIL", gpu="1") == []
    # GPM activity is per instance; what it does not report has no series.
    [(prof_labels, active)] = series(metrics, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", gpu="1")
    assert (prof_labels["GPU_I_ID"], active) == ("3", 0.25)
    assert series(metrics, "DCGM_FI_PROF_SM_ACTIVE", gpu="1") == []


def test_an_idle_gpu_has_one_series_with_empty_pod_labels() -> None:
    snap = example_snapshot()
    idle = Snapshot(reading=snap.reading, pods={})
    [(labels, _)] = series(scrape(status(idle)), "DCGM_FI_DEV_GPU_UTIL", gpu="0")
    assert (labels["namespace"], labels["pod"], labels["container"]) == ("", "", "")


def test_a_lost_gpu_exports_health_but_no_values() -> None:
    metrics = scrape(status(example_snapshot()))
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE"):
        assert series(metrics, name, gpu="2") == []
    health = {lab["gpu"]: v for lab, v in metrics["gpupool_agent_gpu_healthy"]}
    assert health == {"0": 1.0, "1": 1.0, "2": 0.0}
    assert series(metrics, "gpupool_agent_gpu_healthy", gpu="2")[0][0]["UUID"] == "GPU-c"


def test_agent_health_metrics() -> None:
    metrics = scrape(status(example_snapshot()))
    assert metrics["gpupool_agent_nvml_up"] == [({"Hostname": "gpu-node-1"}, 1.0)]
    assert metrics["gpupool_agent_samples_buffered"] == [({"Hostname": "gpu-node-1"}, 12.0)]
    dropped = {lab["reason"]: v for lab, v in metrics["gpupool_agent_samples_dropped"]}
    assert {lab["Hostname"] for lab, _ in metrics["gpupool_agent_samples_dropped"]} == {
        "gpu-node-1"
    }
    assert dropped == {"buffer_full": 3.0, "rejected": 1.0}
    assert metrics["gpupool_agent_samples_pushed"] == [({"Hostname": "gpu-node-1"}, 500.0)]
    assert metrics["gpupool_agent_push_failures"] == [({"Hostname": "gpu-node-1"}, 4.0)]
    assert metrics["gpupool_agent_pod_lookup_failures"] == [({"Hostname": "gpu-node-1"}, 2.0)]
    assert metrics["gpupool_agent_last_push_success_timestamp_seconds"] == [
        ({"Hostname": "gpu-node-1"}, 1.8e9)
    ]
    assert metrics["gpupool_agent_last_sample_timestamp_seconds"] == [
        ({"Hostname": "gpu-node-1"}, 1_800_000_010.0)
    ]


def test_counters_are_exposed_with_the_total_suffix() -> None:
    registry = CollectorRegistry()
    registry.register(AgentCollector("n", lambda: status(example_snapshot())))
    text = generate_latest(registry).decode()
    assert 'gpupool_agent_samples_dropped_total{Hostname="n",reason="buffer_full"} 3.0' in text
    assert 'gpupool_agent_push_failures_total{Hostname="n"} 4.0' in text
    assert "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text


def test_before_any_reading_and_before_any_push() -> None:
    metrics = scrape(status(None, last_push_success=None, last_sample=None))
    assert metrics["gpupool_agent_nvml_up"] == [({"Hostname": "gpu-node-1"}, 0.0)]
    assert metrics["DCGM_FI_DEV_GPU_UTIL"] == []
    assert "gpupool_agent_last_push_success_timestamp_seconds" not in metrics
    assert "gpupool_agent_last_sample_timestamp_seconds" not in metrics


def test_nvml_down_reports_zero() -> None:
    down = NodeReading(at=datetime(2026, 11, 22, tzinfo=UTC), nvml_ok=False, error="x")
    metrics = scrape(status(Snapshot(reading=down)))
    assert metrics["gpupool_agent_nvml_up"] == [({"Hostname": "gpu-node-1"}, 0.0)]
