"""Pod lookup through the official kubernetes client, against a loopback pod API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics.agent.pods import (
    KubernetesPodDirectory,
    PodInfo,
    kubernetes_core_api,
    parse_request_id,
)
from tests.metrics.fakes import FakePodApi, pod_json

UID_A = "11111111-1111-4111-8111-111111111111"
UID_B = "22222222-2222-4222-8222-222222222222"
CID_MAIN = "a" * 64
CID_SIDE = "b" * 64


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> Iterator[FakePodApi]:
    server = FakePodApi(
        [
            pod_json(
                "train-0",
                UID_A,
                "gpu-node-1",
                containers={"main": CID_MAIN, "sidecar": CID_SIDE},
                labels={"gpupool.io/request": "42"},
            ),
            pod_json("elsewhere", UID_B, "gpu-node-2"),
        ]
    )
    yield server
    server.stop()


def directory(api: FakePodApi, tmp_path: Path, ticks: Ticks) -> KubernetesPodDirectory:
    core = kubernetes_core_api(api.kubeconfig(tmp_path / "kubeconfig"))
    return KubernetesPodDirectory(
        core, "gpu-node-1", refresh_s=30, miss_refresh_s=5, request_timeout_s=5, monotonic=ticks
    )


def test_lists_only_this_nodes_pods_with_a_field_selector(api: FakePodApi, tmp_path: Path) -> None:
    pods = directory(api, tmp_path, Ticks())
    info = pods.lookup(UID_A)
    assert info == PodInfo(
        uid=UID_A,
        namespace="acme",
        name="train-0",
        request_id=42,
        container_names=("main", "sidecar"),
        containers={CID_MAIN: "main", CID_SIDE: "sidecar"},
    )
    assert api.queries[0]["fieldSelector"] == ["spec.nodeName=gpu-node-1"]
    assert info.container_name(CID_SIDE) == "sidecar"
    # Not knowing which of two containers: no guess.
    assert info.container_name(None) == ""
    # A pod on another node is not this agent's business.
    assert pods.lookup(UID_B) is None


def test_the_list_is_cached_and_refreshed_on_a_timer(api: FakePodApi, tmp_path: Path) -> None:
    ticks = Ticks()
    pods = directory(api, tmp_path, ticks)
    pods.lookup(UID_A)
    ticks.now += 10
    pods.lookup(UID_A)
    assert pods.lists == 1
    ticks.now += 25
    pods.lookup(UID_A)
    assert pods.lists == 2


def test_a_miss_refreshes_at_most_once_per_miss_interval(api: FakePodApi, tmp_path: Path) -> None:
    ticks = Ticks()
    pods = directory(api, tmp_path, ticks)
    unknown = "33333333-3333-4333-8333-333333333333"
    assert pods.lookup(unknown) is None
    ticks.now += 1
    assert pods.lookup(unknown) is None
    assert len(api.queries) == 1  # The second miss came too soon for another list.
    # A pod that started since: found on the next miss after the interval.
    api.pods.append(pod_json("new-0", unknown, "gpu-node-1"))
    ticks.now += 5
    found = pods.lookup(unknown)
    assert found is not None and found.name == "new-0"
    assert found.container_name(None) == "main"  # One container: the choice is clear.


def test_api_failures_keep_the_last_list_and_are_counted(api: FakePodApi, tmp_path: Path) -> None:
    ticks = Ticks()
    pods = directory(api, tmp_path, ticks)
    assert pods.lookup(UID_A) is not None
    api.fail = True
    ticks.now += 31
    info = pods.lookup(UID_A)
    assert info is not None and info.name == "train-0"
    assert pods.failures == 1
    api.fail = False
    ticks.now += 31
    pods.lookup(UID_A)
    assert pods.failures == 1 and pods.lists == 2


def test_an_unreachable_api_server_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    api = FakePodApi([])
    config = api.kubeconfig(tmp_path / "kubeconfig")
    api.stop()  # Nothing listens on that port any more.
    pods = KubernetesPodDirectory(
        kubernetes_core_api(config), "gpu-node-1", request_timeout_s=2, monotonic=Ticks()
    )
    assert pods.lookup(UID_A) is None
    assert pods.failures == 1


def test_static_pods_are_found_by_their_mirror_hash(tmp_path: Path) -> None:
    config_hash = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    api = FakePodApi(
        [
            pod_json(
                "etcd-gpu-node-1",
                UID_A,
                "gpu-node-1",
                namespace="kube-system",
                annotations={"kubernetes.io/config.mirror": config_hash},
            )
        ]
    )
    try:
        pods = directory(api, tmp_path, Ticks())
        info = pods.lookup(config_hash)
        assert info is not None and info.name == "etcd-gpu-node-1"
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("42", 42), (" 7 ", 7), (None, None), ("", None), ("abc", None), ("-3", None)],
)
def test_request_label_values(value: str | None, expected: int | None) -> None:
    assert parse_request_id(value) == expected
