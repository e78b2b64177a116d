"""Small builders shared by the k8s tests: a settable clock and API objects."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from k8s.apisim.store import Store
from k8s.settings import GATE, GPU_RESOURCE, HOSTNAME_LABEL, PRODUCT_LABEL, REQUEST_LABEL

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


def node(
    name: str,
    gpus: int = 8,
    product: str = "NVIDIA-H100-80GB-HBM3",
    *,
    ready: bool = True,
    unschedulable: bool = False,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    labels = {HOSTNAME_LABEL: name}
    if product:
        labels[PRODUCT_LABEL] = product
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {
            "allocatable": {GPU_RESOURCE: str(gpus)} if gpus else {},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def namespace(name: str, tenant: str | None = None) -> dict[str, Any]:
    labels = {"gpupool.io/tenant": tenant} if tenant else {}
    return {"metadata": {"name": name, "labels": labels}}


def pod(
    name: str,
    request: int | str | None,
    gpus: int = 1,
    *,
    gated: bool = True,
    affinity: dict[str, Any] | None = None,
    run_seconds: float | None = None,
    exit_code: int = 0,
) -> dict[str, Any]:
    labels = {REQUEST_LABEL: str(request)} if request is not None else {}
    annotations = {}
    if run_seconds is not None:
        annotations["sim.gpupool.io/run-seconds"] = str(run_seconds)
    if exit_code:
        annotations["sim.gpupool.io/exit-code"] = str(exit_code)
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "trainer:1",
                "resources": {"limits": {GPU_RESOURCE: str(gpus)}} if gpus else {},
            }
        ],
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    if affinity:
        spec["affinity"] = affinity
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}, "spec": spec}


def cluster_of(store: Store, nodes: int = 2, gpus: int = 8) -> None:
    """Nodes n0..n{nodes-1} and tenant namespaces ``acme`` and ``beta``."""
    for i in range(nodes):
        store.create("nodes", "", node(f"n{i}", gpus))
    store.create("namespaces", "", namespace("acme", "acme"))
    store.create("namespaces", "", namespace("beta", "beta"))
