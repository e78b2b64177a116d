"""Helpers for the usage tests: an agent token for the app, and samples as the agent sends them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.api.helpers import ok

AGENT_TOKEN = "test-agent-token-0123456789"
AGENT = {"Authorization": f"Bearer {AGENT_TOKEN}"}


@pytest.fixture
def agent(app: Any) -> dict[str, str]:
    """Give the app an agent token; returns the agent's auth headers."""
    app.state.ctx.settings.agent_token = SecretStr(AGENT_TOKEN)
    return AGENT


def pod(request_id: int | None, namespace: str = "acme", name: str = "train-0") -> dict[str, Any]:
    return {
        "namespace": namespace,
        "pod": name,
        "container": "main",
        "pod_uid": f"uid-{name}",
        "request_id": request_id,
        "used_mib": 1000,
    }


def sample(
    node: str,
    gpu: int,
    ts: datetime,
    util: float | None,
    *,
    pods: list[dict[str, Any]] | None = None,
    mig: int | None = None,
    fb_total_mib: int = 81559,
    power_w: float | None = 300.0,
) -> dict[str, Any]:
    return {
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu_uuid": f"GPU-{node}-{gpu}",
        "gpu_index": gpu,
        "model": "NVIDIA H100 80GB HBM3",
        "mig_instance": mig,
        "util_pct": util,
        "fb_used_mib": 1024,
        "fb_total_mib": fb_total_mib,
        "power_w": power_w,
        "temp_c": 60,
        "pods": pods or [],
    }


def passes(
    node: str,
    first: datetime,
    count: int,
    gpus: Iterable[int],
    util: float | None,
    *,
    every: float = 10.0,
    pods: dict[int, list[dict[str, Any]]] | None = None,
    utils: dict[int, float | None] | None = None,
) -> list[dict[str, Any]]:
    """``count`` sampling passes over ``gpus``, the first at ``first``, one every ``every``
    seconds; ``utils`` overrides ``util`` for some GPUs, ``pods`` gives GPUs their pods."""
    gpus = list(gpus)
    out = []
    for k in range(count):
        ts = first + timedelta(seconds=every * k)
        for g in gpus:
            u = (utils or {}).get(g, util)
            out.append(sample(node, g, ts, u, pods=(pods or {}).get(g)))
    return out


def push(
    client: TestClient,
    node: str,
    samples: list[dict[str, Any]],
    *,
    interval: float = 10.0,
    headers: dict[str, str] | None = None,
    status: int = 202,
) -> dict[str, Any]:
    """Push ``samples`` in batches of at most 500, as the agent does; the summed answers."""
    total: dict[str, Any] = {}
    for start in range(0, max(len(samples), 1), 500):
        body = {"node": node, "interval_s": interval, "samples": samples[start : start + 500]}
        got = ok(client.post("/v1/usage/samples", json=body, headers=headers or AGENT), status)
        for key in ("received", "stored", "duplicates", "mismatches"):
            total[key] = total.get(key, 0) + got[key]
        for key, n in got["attributed"].items():
            total.setdefault("attributed", {}).setdefault(key, 0)
            total["attributed"][key] += n
        total.setdefault("idle", []).extend(got["idle"])
    return total


def node_of(client: TestClient, request_id: int, headers: dict[str, str]) -> list[str]:
    """The nodes a request's reservation holds."""
    got = ok(client.get(f"/v1/requests/{request_id}", headers=headers))
    return [a["node"] for a in got["reservation"]["allocation"]]
