"""Usage samples built from a snapshot, and their JSON form."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from metrics.agent.attribution import Snapshot
from metrics.agent.samples import batch_body, format_ts, samples_from
from tests.metrics.fakes import example_snapshot


def test_one_sample_per_healthy_device() -> None:
    samples = samples_from(example_snapshot())
    # GPU 0 whole, GPU 1's MIG instance 3; lost GPU 2 has no measurement to report.
    assert [(s.gpu_index, s.mig_instance) for s in samples] == [(0, None), (1, 3)]
    whole, mig = samples
    assert whole.to_json() == {
        "ts": "2026-11-22T00:00:00Z",
        "gpu_uuid": "GPU-a",
        "gpu_index": 0,
        "model": "NVIDIA H100 80GB HBM3",
        "mig_instance": None,
        "util_pct": 87.0,
        "fb_used_mib": 30 * 1024,
        "fb_total_mib": 80 * 1024,
        "power_w": 312.5,
        "temp_c": 61,
        "pods": [
            {
                "namespace": "acme",
                "pod": "train-0",
                "container": "main",
                "pod_uid": "u1",
                "request_id": 42,
                "used_mib": 20 * 1024,
            },
            {
                "namespace": "beta",
                "pod": "infer-1",
                "container": "srv",
                "pod_uid": "u2",
                "request_id": None,
                "used_mib": 10 * 1024,
            },
        ],
    }
    body = mig.to_json()
    assert (body["gpu_uuid"], body["mig_instance"], body["fb_total_mib"]) == ("GPU-b", 3, 40960)
    # The physical GPU's power and temperature, repeated on its instance; utilisation is the
    # instance's GPM engine activity, in percent.
    assert (body["power_w"], body["temp_c"], body["util_pct"]) == (100.0, 40, 25.0)
    assert [p["pod"] for p in body["pods"]] == ["notebook"]


def test_timestamps_are_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 11, 22, 12, 0, 5, 999_000, tzinfo=plus_two)) == (
        "2026-11-22T10:00:05Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 11, 22))


def test_batch_body_names_the_node_and_interval() -> None:
    body = batch_body("gpu-node-1", 10.0, samples_from(example_snapshot()))
    assert (body["node"], body["interval_s"], len(body["samples"])) == ("gpu-node-1", 10.0, 2)


def test_a_mig_instance_without_gpm_has_no_utilisation() -> None:
    snap = example_snapshot()
    gpus = tuple(
        replace(g, mig=tuple(replace(m, prof=None) for m in g.mig)) for g in snap.reading.gpus
    )
    no_gpm = Snapshot(reading=replace(snap.reading, gpus=gpus), pods=snap.pods)
    [mig] = [s for s in samples_from(no_gpm) if s.mig_instance is not None]
    assert mig.util_pct is None
