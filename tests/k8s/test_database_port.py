"""The controller wired to the real scheduler: the database port, through the official client
and the loopback fake API server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from k8s.apisim.kubelet import KubeletSim
from k8s.apisim.store import Store
from k8s.controller import Controller
from k8s.db_port import DatabasePort
from k8s.fakeapi import FakeApiServer
from k8s.settings import ControllerSettings
from tests.api.helpers import ok
from tests.k8s.conftest import FAST, kube_cluster, settle
from tests.k8s.helpers import namespace, node, pod

PRODUCT = "NVIDIA-H100-80GB-HBM3"


@dataclass
class Wired:
    store: Store
    server: FakeApiServer
    controller: Controller
    port: DatabasePort
    changes: list[str] = field(default_factory=list)

    def reconcile(self) -> Any:
        settle(self.controller.cluster, self.store)  # type: ignore[arg-type]
        report = self.controller.reconcile_once()
        settle(self.controller.cluster, self.store)  # type: ignore[arg-type]
        return report

    def pods(self, ns: str = "acme") -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self.store.list("pods", ns)[0]}


@pytest.fixture
def wired(engine, clock) -> Iterator[Wired]:
    store = Store(clock.now)
    store.create("nodes", "", node("gpu-a", 8, PRODUCT))
    store.create("nodes", "", node("gpu-b", 8, PRODUCT))
    store.create("nodes", "", node("cpu-only", 0, ""))
    store.create("namespaces", "", namespace("acme", "acme"))
    server = FakeApiServer(store, clock=clock.now).start()
    changes: list[str] = []
    port = DatabasePort(engine, clock.now, on_change=changes.append, discover_nodes=True)
    settings = ControllerSettings(**{**FAST, "gpu_classes": {PRODUCT: "H100-80GB"}})
    controller = Controller(port, kube_cluster(server), clock.now, settings)
    controller.cluster.start()
    yield Wired(store, server, controller, port, changes)
    controller.stop()
    server.stop()


def test_nodes_are_discovered_into_the_inventory(op, wired):
    report = wired.reconcile()
    assert report.pool_changed and wired.changes == ["cluster nodes changed"]
    nodes = {n["name"]: n for n in ok(op.get("/v1/nodes"))["items"]}
    assert set(nodes) == {"gpu-a", "gpu-b"}  # no GPUs, no pool
    assert all(
        n["source"] == "kubernetes" and n["gpu_class"] == "H100-80GB" for n in nodes.values()
    )
    assert ok(op.get("/v1/gpu-classes/H100-80GB"))["gpus"] == 16

    wired.store.patch(
        "nodes", "", "gpu-b", "application/merge-patch+json", {"spec": {"unschedulable": True}}
    )
    wired.reconcile()
    b = ok(op.get("/v1/nodes/gpu-b"))
    assert b["schedulable"] is False and "cordon" in b["unschedulable_reason"]
    wired.store.delete("nodes", "", "gpu-b")
    wired.reconcile()
    assert op.get("/v1/nodes/gpu-b").status_code == 404
    log = ok(op.get("/v1/audit-log", params={"object_type": "node"}))["items"]
    assert {e["actor"] for e in log} == {"controller"}


def _tenant(op) -> dict[str, str]:
    ok(op.post("/v1/tenants", json={"name": "acme"}), 201)
    ok(op.put("/v1/tenants/acme/quotas/H100-80GB", json={"guaranteed": 16, "limit": 16}))
    key = ok(op.post("/v1/tenants/acme/api-keys", json={}), 201)["token"]
    return {"Authorization": f"Bearer {key}"}


def test_reservation_admits_pods_and_success_completes_the_request(op, cycle, clock, wired):
    wired.reconcile()
    acme = _tenant(op)
    r = ok(
        op.post(
            "/v1/requests",
            json={"gpu_class": "H100-80GB", "gpus": 16, "gpus_per_node": 8, "duration": 3600},
            headers=acme,
        ),
        201,
    )
    for i in range(2):
        wired.store.create("pods", "acme", pod(f"train-{i}", r["id"], gpus=8, run_seconds=600))
    assert wired.reconcile().admitted == 0  # not active yet: the pods wait
    cycle()
    assert ok(op.get(f"/v1/requests/{r['id']}"))["state"] == "active"
    assert wired.reconcile().admitted == 2
    pods = wired.pods()
    nodes = sorted(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][0]["matchExpressions"][0]["values"][0]
        for p in pods.values()
    )
    assert nodes == ["gpu-a", "gpu-b"]
    assert all(not p["spec"].get("schedulingGates") for p in pods.values())

    kubelet = KubeletSim(wired.store)
    kubelet.step()  # bind and start
    clock.advance(601)
    kubelet.step()  # both finish
    report = wired.reconcile()
    assert report.reports == 1
    done = ok(op.get(f"/v1/requests/{r['id']}"))
    assert done["state"] == "completed" and done["reservation"]["end_reason"] == "completed"
    assert f"request {r['id']} ended" in wired.changes


def test_failed_pod_fails_the_request_and_window_end_evicts(op, cycle, clock, wired):
    wired.reconcile()
    acme = _tenant(op)
    body = {"gpu_class": "H100-80GB", "gpus": 8, "duration": 1200}
    bad = ok(op.post("/v1/requests", json=body, headers=acme), 201)
    long = ok(op.post("/v1/requests", json=body, headers=acme), 201)
    wired.store.create("pods", "acme", pod("crash", bad["id"], gpus=8, run_seconds=60, exit_code=3))
    wired.store.create("pods", "acme", pod("forever", long["id"], gpus=8))
    cycle()
    assert wired.reconcile().admitted == 2
    kubelet = KubeletSim(wired.store)
    kubelet.step()
    clock.advance(61)
    kubelet.step()
    wired.reconcile()
    failed = ok(op.get(f"/v1/requests/{bad['id']}"))
    assert failed["state"] == "failed" and failed["reason"]["code"] == "failed"

    clock.advance(1200)
    cycle()  # the window of `long` ends: expired
    assert ok(op.get(f"/v1/requests/{long['id']}"))["state"] == "expired"
    report = wired.reconcile()
    assert report.evicted == 1
    assert "deletionTimestamp" in wired.pods()["forever"]["metadata"]
