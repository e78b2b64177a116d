"""Fixtures: a controller world on the simulated cluster and on the loopback fake API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client

from k8s.apisim.kubelet import KubeletSim
from k8s.apisim.store import Store
from k8s.cluster import Cluster
from k8s.controller import Controller, PassReport
from k8s.fakeapi import FakeApiServer
from k8s.kube import Backoff, KubeCluster
from k8s.memory import InMemoryScheduler
from k8s.port import RequestState, RequestView
from k8s.settings import REQUEST_LABEL, TENANT_LABEL, ControllerSettings
from k8s.simulated import SimulatedCluster
from tests.k8s.helpers import FakeClock, cluster_of

FAST: dict[str, Any] = dict(
    leader_election=False, write_workers=4, eviction_grace_s=30, force_delete_after_s=60
)


def kube_cluster(server: FakeApiServer, timeout: float = 2.0) -> KubeCluster:
    configuration = client.Configuration(host=server.url)
    return KubeCluster(
        client.ApiClient(configuration),
        request_timeout_s=timeout,
        watch_timeout_s=30,
        backoff=Backoff(base=0.01, cap=0.05, tries=4),
        sync_timeout_s=5,
    )


@dataclass
class World:
    """A store, the controller over it, and the in-memory scheduler it obeys."""

    kind: str
    store: Store
    clock: FakeClock
    port: InMemoryScheduler
    cluster: Cluster
    controller: Controller
    server: FakeApiServer | None = None
    extra: list[Controller] = field(default_factory=list)

    @property
    def kubelet(self) -> KubeletSim:
        return KubeletSim(self.store)

    def settle(self) -> None:
        """Wait until the watch caches show what the store holds (kube adapter only)."""
        if not isinstance(self.cluster, KubeCluster):
            return
        settle(self.cluster, self.store)

    def reconcile(self, controller: Controller | None = None) -> PassReport:
        self.settle()
        report = (controller or self.controller).reconcile_once()
        self.settle()
        return report

    def pods(self, ns: str = "acme") -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self.store.list("pods", ns)[0]}

    def events(self, ns: str = "acme") -> list[tuple[str, str, str]]:
        return [
            (e["involvedObject"]["name"], e["reason"], e["message"])
            for e in self.store.list("events", ns)[0]
        ]

    def request(
        self,
        rid: int,
        tenant: str = "acme",
        state: RequestState = RequestState.ACTIVE,
        allocation: dict[str, int] | None = None,
        start: datetime | None = None,
        hours: float = 1.0,
        per_node: int = 4,
    ) -> RequestView:
        from datetime import timedelta

        begin = start or self.clock()
        view = RequestView(
            id=rid,
            tenant=tenant,
            state=state,
            gpus_per_node=per_node,
            allocation={"n0": 4, "n1": 4} if allocation is None else allocation,
            window_start=begin,
            window_end=begin + timedelta(hours=hours),
        )
        self.port.put_request(view)
        return view


def settle(cluster: KubeCluster, store: Store, timeout: float = 5.0) -> None:
    def want(resource: str, selector: str | None) -> dict[tuple[str, str], str]:
        return {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"][
                "resourceVersion"
            ]
            for o in store.list(resource, label_selector=selector)[0]
        }

    def have(items: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        return {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"][
                "resourceVersion"
            ]
            for o in items
        }

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            have(cluster.nodes.items()) == want("nodes", None)
            and have(cluster.namespaces.items()) == want("namespaces", TENANT_LABEL)
            and have(cluster.pods.items()) == want("pods", REQUEST_LABEL)
        ):
            return
        time.sleep(0.01)
    raise AssertionError("watch caches did not catch up with the store")


def make_world(kind: str, **settings: Any) -> World:
    clock = FakeClock()
    port = InMemoryScheduler()
    port.put_tenant("acme")
    port.put_tenant("beta")
    store = Store(clock)
    cluster_of(store)
    server = None
    cluster: Cluster
    if kind == "simulated":
        cluster = SimulatedCluster(clock=clock, store=store)
    else:
        server = FakeApiServer(store, clock=clock).start()
        cluster = kube_cluster(server)
    controller = Controller(port, cluster, clock, ControllerSettings(**{**FAST, **settings}))
    cluster.start()
    return World(kind, store, clock, port, cluster, controller, server)


def close_world(world: World) -> None:
    for c in [world.controller, *world.extra]:
        c.stop()
    if world.server is not None:
        world.server.stop()


@pytest.fixture(params=["simulated", "kube"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    w = make_world(request.param)
    yield w
    close_world(w)


@pytest.fixture
def kube_world() -> Iterator[World]:
    w = make_world("kube")
    yield w
    close_world(w)
