"""The controller converges through API faults: 500s, 409s, timeouts, dropped watches, 410."""

from __future__ import annotations

import time

from k8s.fakeapi import Fault
from k8s.kube import KubeCluster
from k8s.objects import PodView
from k8s.port import RequestState
from tests.k8s.conftest import World
from tests.k8s.helpers import pod

PATCH_PODS = r"/namespaces/acme/pods/[^/]+$"


def ungated(world: World) -> int:
    return sum(1 for p in world.pods().values() if not PodView.parse(p).gated)


def setup_pods(world: World, count: int = 4, gpus: int = 2) -> None:
    world.request(1)
    for i in range(count):
        world.store.create("pods", "acme", pod(f"p{i}", 1, gpus=gpus))


def test_server_errors_are_retried_within_the_pass(kube_world: World) -> None:
    setup_pods(kube_world)
    assert kube_world.server is not None
    kube_world.server.faults.add(Fault(method="PATCH", path=PATCH_PODS, status=500, times=3))
    report = kube_world.reconcile()
    assert report.admitted == 4 and not report.errors and ungated(kube_world) == 4


def test_persistent_errors_fail_the_pass_and_the_next_one_converges(kube_world: World) -> None:
    setup_pods(kube_world)
    assert kube_world.server is not None
    kube_world.server.faults.add(Fault(method="PATCH", path=PATCH_PODS, status=503, times=100))
    report = kube_world.reconcile()
    assert report.admitted == 0 and len(report.errors) == 4
    kube_world.server.faults.clear()
    report = kube_world.reconcile()
    assert report.admitted == 4 and ungated(kube_world) == 4


def test_conflicts_are_reread_and_retried(kube_world: World) -> None:
    setup_pods(kube_world)
    assert kube_world.server is not None
    kube_world.server.faults.add(Fault(method="PATCH", path=PATCH_PODS, status=409, times=4))
    first = kube_world.reconcile()
    # Each pod re-reads and retries up to three times in a pass; one that kept conflicting
    # is left to the next pass, which finds the conflicts gone.
    second = kube_world.reconcile()
    assert first.admitted + second.admitted == 4 and not second.errors
    assert first.admitted >= 1 and ungated(kube_world) == 4
    assert kube_world.server.faults.take("PATCH", "/api/v1/namespaces/acme/pods/p0", False) is None


def test_stale_cache_gets_409_and_the_fresh_pod_is_used(kube_world: World) -> None:
    setup_pods(kube_world, count=1)
    kube_world.settle()
    # Someone labels the pod behind the controller's back; the cache has not seen it yet
    # because the watch is stalled by a slow answer.
    kube_world.server.faults.add(Fault(path="/pods", watch=True, delay=0.5))  # type: ignore[union-attr]
    assert isinstance(kube_world.cluster, KubeCluster)
    kube_world.store.patch(
        "pods",
        "acme",
        "p0",
        "application/merge-patch+json",
        {"metadata": {"labels": {"team": "x"}}},
    )
    report = kube_world.controller.reconcile_once()
    assert report.admitted == 1
    assert kube_world.pods()["p0"]["metadata"]["labels"]["team"] == "x"


def test_timeouts_with_lost_answers_do_not_double_admit(kube_world: World) -> None:
    setup_pods(kube_world, count=5, gpus=2)
    assert kube_world.server is not None
    # The write happens, but its answer comes after the client gave up (timeout 2 s).
    kube_world.server.faults.add(Fault(method="PATCH", path=PATCH_PODS, delay=2.5, times=2))
    report = kube_world.reconcile()
    time.sleep(0.6)
    report2 = kube_world.reconcile()
    assert report.admitted + report2.admitted <= 4
    per_node: dict[str, int] = {}
    for raw in kube_world.pods().values():
        view = PodView.parse(raw)
        if not view.gated:
            node = view.pinned_node()
            assert node is not None
            per_node[node] = per_node.get(node, 0) + view.gpus
    assert per_node == {"n0": 4, "n1": 4}


def test_dropped_watch_and_410_relist_keep_the_cache_true(kube_world: World) -> None:
    cluster = kube_world.cluster
    server = kube_world.server
    assert isinstance(cluster, KubeCluster) and server is not None
    kube_world.settle()
    rewatches = cluster.pods.rewatches
    # The stream drops, and so does the first attempt to resume it.
    server.faults.add(Fault(path="/pods", watch=True, drop_after=0))
    deadline = time.monotonic() + 5
    while server.open_watches < 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # the informers open their watches right after their first list
    assert server.drop_watches() == 3
    setup_pods(kube_world, count=2)
    kube_world.settle()
    assert cluster.pods.rewatches >= rewatches + 1
    # The resume point is gone (410 Gone in the stream): the informer relists.
    relists = cluster.pods.relists
    server.faults.add(Fault(path="/pods", watch=True, expire=True))
    server.drop_watches()
    kube_world.store.create("pods", "acme", pod("late", 1, gpus=2))
    kube_world.settle()
    deadline = time.monotonic() + 5
    while cluster.pods.relists == relists and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cluster.pods.relists == relists + 1
    # Some API servers answer the resume itself with HTTP 410: same outcome.
    server.faults.add(Fault(path="/pods", watch=True, status=410))
    while server.open_watches < 3 and time.monotonic() < deadline + 5:
        time.sleep(0.01)
    server.drop_watches()
    kube_world.store.create("pods", "acme", pod("later", 1, gpus=2))
    kube_world.settle()
    deadline = time.monotonic() + 5
    while cluster.pods.relists == relists + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cluster.pods.relists == relists + 2
    report = kube_world.reconcile()
    assert report.admitted == 4


def test_eviction_refused_by_budget_is_followed_by_delete(kube_world: World) -> None:
    setup_pods(kube_world, count=1)
    kube_world.reconcile()
    kube_world.kubelet.step()
    assert kube_world.server is not None
    kube_world.server.faults.add(Fault(path="/eviction$", status=429, times=100))
    kube_world.port.set_state(1, RequestState.PREEMPTED)
    report = kube_world.reconcile()
    assert report.evicted == 0 and report.errors
    assert any(e[1] == "EvictionRefused" for e in kube_world.events())
    kube_world.clock.advance(30 + 60)
    report = kube_world.reconcile()
    assert report.deleted == 1
    kube_world.kubelet.step()
    assert kube_world.pods() == {}


def test_unreachable_api_is_reported_as_unavailable() -> None:
    import socket

    from kubernetes import client

    from k8s.cluster import Unavailable
    from k8s.kube import Backoff

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    cluster = KubeCluster(
        client.ApiClient(configuration),
        request_timeout_s=0.5,
        backoff=Backoff(base=0.01, cap=0.02, tries=3),
        sync_timeout_s=0.2,
    )
    try:
        try:
            cluster.get_pod("acme", "p")
        except Unavailable as exc:
            assert exc.temporary
        else:
            raise AssertionError("expected Unavailable")
        try:
            cluster.snapshot()  # the caches never synced
        except Unavailable as exc:
            assert "not synced" in str(exc)
        else:
            raise AssertionError("expected Unavailable")
    finally:
        cluster.close()
