"""The controller end to end, on the simulated cluster and through the fake API server."""

from __future__ import annotations

from datetime import timedelta

from k8s.controller import Controller
from k8s.objects import PodView
from k8s.port import RequestState
from k8s.settings import ControllerSettings
from tests.k8s.conftest import FAST, World
from tests.k8s.helpers import T0, node, pod


def admitted(world: World, ns: str = "acme") -> dict[str, str | None]:
    """Pod name -> the node it is pinned to, for ungated pods."""
    out = {}
    for name, raw in world.pods(ns).items():
        view = PodView.parse(raw)
        if not view.gated:
            out[name] = view.pinned_node()
    return out


def test_reservation_start_admits_pods_on_reserved_nodes(world: World) -> None:
    world.request(1, start=T0 + timedelta(minutes=10))
    world.port.set_state(1, RequestState.PLANNED)
    for i in range(5):
        world.store.create("pods", "acme", pod(f"p{i}", 1, gpus=2))
    report = world.reconcile()
    assert report.admitted == 0 and admitted(world) == {}
    assert (
        "p0",
        "WaitingForReservation",
        "request 1 is planned; its reservation starts at 2030-01-07T09:10:00Z",
    ) in world.events()
    assert report.next_wake == T0 + timedelta(minutes=10)

    # The start time alone does not admit: the scheduler's cycle must open the reservation
    # (until then the plan may still move it).
    world.clock.advance(600)
    assert world.reconcile().admitted == 0
    world.port.set_state(1, RequestState.ACTIVE)
    report = world.reconcile()
    pinned = admitted(world)
    assert report.admitted == 4 and len(pinned) == 4
    per_node: dict[str, int] = {}
    for node_name in pinned.values():
        assert node_name is not None
        per_node[node_name] = per_node.get(node_name, 0) + 2
    assert per_node == {"n0": 4, "n1": 4}
    held = set(world.pods()) - set(pinned)
    assert any(e[0] in held and e[1] == "ReservationFull" for e in world.events())
    assert sum(1 for e in world.events() if e[1] == "Admitted") == 4

    # Level-based: a second pass over the same state writes nothing at all (the kubelet's
    # own writes, binding the admitted pods, happen first).
    world.kubelet.step()
    world.settle()
    version = world.store.resource_version
    report = world.reconcile()
    assert report.admitted == 0 and report.events == 0
    assert world.store.resource_version == version


def test_pods_of_unknown_foreign_and_ended_requests_stay_gated(world: World) -> None:
    world.request(1)
    world.request(2, tenant="beta")
    world.request(3, state=RequestState.CANCELLED)
    world.store.create("pods", "acme", pod("unknown", 42))
    world.store.create("pods", "acme", pod("foreign", 2))
    world.store.create("pods", "acme", pod("ended", 3))
    world.store.create("pods", "acme", pod("huge", 1, gpus=8))
    world.store.create("pods", "acme", pod("badlabel", "abc"))
    world.store.create("namespaces", "", {"metadata": {"name": "plain"}})
    world.store.create("pods", "plain", pod("stray", 1))
    world.reconcile()
    assert admitted(world) == {} and admitted(world, "plain") == {}
    reasons = {name: reason for name, reason, _ in world.events()}
    assert reasons == {
        "unknown": "UnknownRequest",
        "foreign": "ForeignRequest",
        "ended": "RequestEnded",
        "huge": "GPURequestTooLarge",
        "badlabel": "InvalidRequestLabel",
    }
    assert [e[1] for e in world.events("plain")] == ["NotATenantNamespace"]


def test_reservation_end_evicts_then_deletes_what_remains(world: World) -> None:
    world.request(1)
    for i in range(4):
        world.store.create("pods", "acme", pod(f"p{i}", 1, gpus=2))
    world.reconcile()
    world.kubelet.step()
    phases = {p["spec"].get("nodeName"): p["status"]["phase"] for p in world.pods().values()}
    assert phases == {"n0": "Running", "n1": "Running"}
    # n1 loses its kubelet: its pods can never confirm termination.
    world.store.update_status(
        "nodes",
        "",
        "n1",
        lambda n: n["status"].update(conditions=[{"type": "Ready", "status": "False"}]),
    )
    world.port.set_state(1, RequestState.EXPIRED)
    report = world.reconcile()
    assert report.evicted == 4
    assert all("deletionTimestamp" in p["metadata"] for p in world.pods().values())
    assert sum(1 for e in world.events() if e[1] == "Evicted") == 4
    world.kubelet.step()
    assert {p["spec"]["nodeName"] for p in world.pods().values()} == {"n1"}
    assert world.reconcile().deleted == 0  # still inside grace + slack
    world.clock.advance(30 + 60)
    report = world.reconcile()
    assert report.deleted == 2 and world.pods() == {}


def test_window_end_by_clock_evicts_even_before_the_state_changes(world: World) -> None:
    world.request(1, hours=1)
    world.store.create("pods", "acme", pod("p", 1, gpus=4))
    world.reconcile()
    world.kubelet.step()
    world.clock.advance(3600)
    report = world.reconcile()
    assert report.evicted == 1


def test_phase_feedback(world: World) -> None:
    world.request(1)
    world.request(2, allocation={"n0": 2})
    world.store.create("pods", "acme", pod("ok-a", 1, gpus=2, run_seconds=60))
    world.store.create("pods", "acme", pod("ok-b", 1, gpus=2, run_seconds=120))
    world.store.create("pods", "acme", pod("bad", 2, gpus=2, run_seconds=30, exit_code=3))
    world.reconcile()
    world.kubelet.step()
    world.clock.advance(61)
    world.kubelet.step()
    world.reconcile()
    failed = [(r.request_id, r.outcome.value) for r in world.port.reports]
    assert failed == [(2, "failed")]
    assert "exited with code 3" in world.port.reports[0].text
    world.clock.advance(60)
    world.kubelet.step()
    world.reconcile()
    world.reconcile()
    assert [(r.request_id, r.outcome.value) for r in world.port.reports] == [
        (2, "failed"),
        (1, "completed"),
    ]
    assert world.port.request(1).state is RequestState.COMPLETED


def test_inventory_sync_and_cordon(world: World) -> None:
    world.store.create("nodes", "", node("cpu-only", gpus=0))
    report = world.reconcile()
    assert report.pool_changed
    assert set(world.port.nodes) == {"n0", "n1"}
    assert world.reconcile().pool_changed is False and world.port.node_syncs == 1
    world.store.patch(
        "nodes", "", "n1", "application/merge-patch+json", {"spec": {"unschedulable": True}}
    )
    world.store.create("nodes", "", node("n2", gpus=4))
    report = world.reconcile()
    assert report.pool_changed
    nodes = world.port.nodes
    assert (nodes["n1"].schedulable, nodes["n1"].reason) == (False, "cordoned")
    assert nodes["n2"].gpus == 4 and nodes["n2"].schedulable


def test_restart_rebuilds_state_from_the_cluster(world: World) -> None:
    world.request(1)
    for i in range(3):
        world.store.create("pods", "acme", pod(f"p{i}", 1, gpus=4))
    assert world.reconcile().admitted == 2
    fresh = Controller(world.port, world.cluster, world.clock, ControllerSettings(**FAST))
    world.extra.append(fresh)
    world.kubelet.step()
    world.settle()
    versions = {n: p["metadata"]["resourceVersion"] for n, p in world.pods().items()}
    report = world.reconcile(fresh)
    assert report.admitted == 0 and report.evicted == 0
    assert versions == {n: p["metadata"]["resourceVersion"] for n, p in world.pods().items()}
