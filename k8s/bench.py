"""Benchmark: how fast the controller enforces a reservation's start and end on a cluster.

It runs the real controller (official client, watch caches, leader election) against the
loopback fake API server with its simulated kubelet, and a ``pods``-pod request whose window
the scheduler planned ahead: from the window start until every pod is ungated, and from the
window end until every pod is evicted (and until every pod is gone).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kubernetes import client

from k8s.apisim.store import Store
from k8s.controller import Controller
from k8s.fakeapi import FakeApiServer
from k8s.kube import KubeCluster
from k8s.memory import InMemoryScheduler
from k8s.port import RequestState, RequestView
from k8s.settings import GATE, GPU_RESOURCE, HOSTNAME_LABEL, PRODUCT_LABEL, ControllerSettings
from k8s.simulated import SimNode, SimulatedCluster

_POLL_S = 0.005


@dataclass(frozen=True)
class BenchRound:
    """Seconds from the window start to all pods ungated, from the window end to all evicted
    (deletion started) and to all gone, and the API requests the round made."""

    admit_s: float
    evict_s: float
    gone_s: float
    requests: int


def _wait(condition: Callable[[], bool], timeout: float) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the controller did not converge in time")
        time.sleep(_POLL_S)
    return time.perf_counter()


def _setup(store: Store, pods: int, gpus_per_pod: int, nodes: int) -> dict[str, int]:
    per_node = -(-pods * gpus_per_pod // nodes)
    store.create("namespaces", "", {"metadata": {"name": "gpupool-system"}})
    store.create(
        "namespaces", "", {"metadata": {"name": "acme", "labels": {"gpupool.io/tenant": "acme"}}}
    )
    allocation = {}
    for i in range(nodes):
        name = f"gpu-{i:02d}"
        allocation[name] = per_node
        store.create(
            "nodes",
            "",
            {
                "metadata": {
                    "name": name,
                    "labels": {HOSTNAME_LABEL: name, PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"},
                },
                "status": {
                    "allocatable": {GPU_RESOURCE: str(per_node)},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
        )
    for i in range(pods):
        store.create(
            "pods",
            "acme",
            {
                "metadata": {"name": f"train-{i:03d}", "labels": {"gpupool.io/request": "1"}},
                "spec": {
                    "schedulingGates": [{"name": GATE}],
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "main",
                            "image": "trainer",
                            "resources": {"limits": {GPU_RESOURCE: str(gpus_per_pod)}},
                        }
                    ],
                },
            },
        )
    return allocation


def run_round(
    pods: int = 64, gpus_per_pod: int = 1, nodes: int = 8, workers: int = 8, lead_s: float = 2.0
) -> BenchRound:
    """One round on a fresh fake API server; the window opens ``lead_s`` after set-up."""
    with FakeApiServer(kubelet_interval=0.02) as server:
        store = server.store
        allocation = _setup(store, pods, gpus_per_pod, nodes)
        port = InMemoryScheduler()
        port.put_tenant("acme")
        start = datetime.now(UTC) + timedelta(seconds=lead_s)
        port.put_request(
            RequestView(
                1,
                "acme",
                RequestState.PLANNED,
                gpus_per_node=max(allocation.values()),
                allocation=allocation,
                window_start=start,
                window_end=start + timedelta(seconds=lead_s + 2),
            )
        )
        api = client.ApiClient(client.Configuration(host=server.url))
        settings = ControllerSettings(write_workers=workers, identity="bench")
        controller = Controller(port, KubeCluster(api), settings=settings)
        controller.start()
        try:

            def all_ungated() -> bool:
                gated, _ = store.count("pods", lambda p: bool(p["spec"].get("schedulingGates")))
                return gated == 0

            # The reservation opens when the scheduler's cycle makes the request active at
            # its start; the controller is woken right after, as the server does.
            time.sleep(max(0.0, start.timestamp() - time.time()))
            port.set_state(1, RequestState.ACTIVE)
            opened = time.time()
            controller.wake()
            done = _wait(all_ungated, lead_s + 30)
            admit_s = time.time() - (time.perf_counter() - done) - opened
            view = port.request(1)
            assert view.window_end is not None
            closes = view.window_end.timestamp()

            def all_evicted() -> bool:
                evicted, total = store.count("pods", lambda p: "deletionTimestamp" in p["metadata"])
                return evicted == total

            done = _wait(all_evicted, lead_s + 60)
            evict_s = time.time() - (time.perf_counter() - done) - closes
            done = _wait(lambda: store.count("pods", lambda p: True)[1] == 0, 30)
            gone_s = time.time() - (time.perf_counter() - done) - closes
            return BenchRound(admit_s, evict_s, gone_s, len(server.requests))
        finally:
            controller.stop()


def run_simulated(pods: int = 64, gpus_per_pod: int = 1, nodes: int = 8) -> BenchRound:
    """The same request on the in-process simulated cluster, one synchronous pass each way."""
    per_node = -(-pods * gpus_per_pod // nodes)
    now = datetime.now(UTC)
    cluster = SimulatedCluster(
        [SimNode(f"gpu-{i:02d}", "H100-80GB", per_node) for i in range(nodes)], clock=lambda: now
    )
    cluster.ensure_namespace("acme", "acme")
    cluster.submit_pods("acme", 1, pods, gpus_per_pod)
    port = InMemoryScheduler()
    port.put_tenant("acme")
    port.put_request(
        RequestView(
            1,
            "acme",
            RequestState.ACTIVE,
            per_node,
            {f"gpu-{i:02d}": per_node for i in range(nodes)},
            now - timedelta(seconds=1),
            now + timedelta(hours=1),
        )
    )
    controller = Controller(port, cluster, lambda: now, ControllerSettings(leader_election=False))
    try:
        t0 = time.perf_counter()
        controller.reconcile_once()
        admit_s = time.perf_counter() - t0
        cluster.kubelet.step()
        port.set_state(1, RequestState.EXPIRED)
        t0 = time.perf_counter()
        controller.reconcile_once()
        evict_s = time.perf_counter() - t0
        cluster.kubelet.step()
        gone_s = time.perf_counter() - t0
        return BenchRound(admit_s, evict_s, gone_s, 0)
    finally:
        controller.stop()


def summary(rounds: list[BenchRound]) -> dict[str, tuple[float, float, float]]:
    """Per measure: (median, min, max) seconds."""
    out = {}
    for name in ("admit_s", "evict_s", "gone_s"):
        values = [getattr(r, name) for r in rounds]
        out[name] = (statistics.median(values), min(values), max(values))
    return out
