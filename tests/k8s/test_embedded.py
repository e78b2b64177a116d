"""The embedded default: the factory, the simulated cluster in a background thread, the bench."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from k8s.bench import run_round, run_simulated
from k8s.controller import Controller
from k8s.factory import build_controller
from k8s.kube import KubeCluster
from k8s.memory import InMemoryScheduler
from k8s.port import RequestState, RequestView
from k8s.simulated import SimNode, SimulatedCluster
from tests.k8s.helpers import FakeClock


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_factory_builds_a_simulated_controller_that_runs_in_the_background() -> None:
    clock = FakeClock()
    port = InMemoryScheduler()
    port.put_tenant("acme")
    controller = build_controller(port, inventory=[SimNode("n0", "H100-80GB", 8)], clock=clock)
    assert isinstance(controller.cluster, SimulatedCluster)
    assert controller.elector is None and controller.settings.create_namespaces
    cluster = controller.cluster
    controller.start()
    try:
        wait_for(lambda: "n0" in port.nodes)
        assert port.nodes["n0"].gpu_class == "H100-80GB"
        wait_for(lambda: cluster.store.list("namespaces", label_selector="gpupool.io/tenant")[0])
        cluster.submit_pods("acme", 7, 2, 4, run_seconds=60)
        port.put_request(
            RequestView(
                7, "acme", RequestState.ACTIVE, 8, {"n0": 8}, clock(), clock().replace(hour=23)
            )
        )
        controller.wake()
        # Admitted, then bound and started by the simulated kubelet (before time moves on, so
        # that they have run their 60 s when it does).
        wait_for(
            lambda: all(
                p["status"]["phase"] == "Running" for p in cluster.store.list("pods", "acme")[0]
            )
        )
        clock.advance(61)
        controller.wake()
        wait_for(lambda: any(r.request_id == 7 for r in port.reports))
        assert port.request(7).state is RequestState.COMPLETED
    finally:
        controller.stop()


def test_factory_uses_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    controller = build_controller(InMemoryScheduler(), kubeconfig=str(kubeconfig))
    assert isinstance(controller, Controller) and isinstance(controller.cluster, KubeCluster)
    assert controller.cluster.api_client.configuration.host == "http://127.0.0.1:1"
    assert controller.elector is not None
    controller.cluster.api_client.close()  # type: ignore[no-untyped-call]


def test_factory_reports_a_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kubeconfig: no such file"):
        build_controller(InMemoryScheduler(), kubeconfig=str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ValueError, match=f"kubeconfig {broken}"):
        build_controller(InMemoryScheduler(), kubeconfig=str(broken))


@pytest.mark.slow
def test_bench_round_converges() -> None:
    result = run_round(pods=8, nodes=2, workers=4, lead_s=0.5)
    assert result.admit_s >= 0 and result.evict_s >= 0 and result.gone_s >= result.evict_s
    assert result.requests >= 8 * 4  # 8 patches, 8 evictions and their events at least
    sim = run_simulated(pods=8, nodes=2)
    assert sim.admit_s > 0
