"""One active controller through a coordination.k8s.io Lease."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k8s.cluster import Cluster
from k8s.controller import Controller
from k8s.settings import ControllerSettings
from k8s.simulated import SimulatedCluster
from tests.k8s.conftest import World, kube_cluster, make_world
from tests.k8s.helpers import pod


def replica(world: World, name: str, cluster: Cluster | None = None) -> Controller:
    settings = ControllerSettings(
        identity=name, lease_duration_s=15, renew_interval_s=5, write_workers=2
    )
    c = Controller(world.port, cluster or world.cluster, world.clock, settings)
    world.extra.append(c)
    return c


@pytest.fixture(params=["simulated", "kube"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[World, Controller, Controller]]:
    world = make_world(request.param)
    world.store.create("namespaces", "", {"metadata": {"name": "gpupool-system"}})
    second: Cluster
    if request.param == "kube":
        assert world.server is not None
        second = kube_cluster(world.server)
        second.start()
    else:
        second = SimulatedCluster(clock=world.clock, store=world.store)
    yield world, replica(world, "a"), replica(world, "b", second)
    for c in world.extra:
        c.stop()
    world.extra.clear()
    world.controller.stop()
    if world.server is not None:
        world.server.stop()


def test_one_leader_at_a_time_and_takeover_after_expiry(
    pair: tuple[World, Controller, Controller],
) -> None:
    world, a, b = pair
    world.request(1)
    world.store.create("pods", "acme", pod("p", 1, gpus=2))
    assert world.reconcile(a).leader is True
    assert world.reconcile(b).leader is False
    lease = world.store.get("leases", "gpupool-system", "gpupool-controller")
    assert lease["spec"]["holderIdentity"] == "a"
    # a renews while it lives; b keeps waiting.
    world.clock.advance(10)
    assert world.reconcile(a).leader and not world.reconcile(b).leader
    # a stops renewing (crashed): after a lease duration as seen by b, b takes over.
    world.clock.advance(10)
    assert not world.reconcile(b).leader
    world.clock.advance(16)
    report = world.reconcile(b)
    assert report.leader
    lease = world.store.get("leases", "gpupool-system", "gpupool-controller")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    # a comes back: it sees b renewing and does not act.
    assert not world.reconcile(a).leader


def test_release_hands_over_at_once(pair: tuple[World, Controller, Controller]) -> None:
    world, a, b = pair
    assert world.reconcile(a).leader
    assert a.elector is not None
    a.elector.release()
    world.clock.advance(5)
    assert world.reconcile(b).leader
