# mypy: disable-error-code="arg-type,union-attr,no-untyped-call,index"
# (These tests drive the official client with plain JSON dicts, as the controller does, and
# read its typed models without None checks; strict typing of the client adds nothing here.)
"""The fake API server, driven by the official client exactly as the controller uses it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch

from k8s.fakeapi import FakeApiServer, Fault
from tests.k8s.helpers import FakeClock, namespace, node, pod


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(clock=FakeClock()) as srv:
        srv.store.create("namespaces", "", namespace("acme", "acme"))
        yield srv


@pytest.fixture
def v1(server: FakeApiServer) -> client.CoreV1Api:
    configuration = client.Configuration(host=server.url)
    configuration.retries = False
    return client.CoreV1Api(client.ApiClient(configuration))


def status_of(call: Any) -> tuple[int, str]:
    with pytest.raises(client.ApiException) as err:
        call()
    return int(err.value.status), json.loads(err.value.body)["message"]


def test_crud_list_selectors_and_typed_models(server: FakeApiServer, v1: client.CoreV1Api) -> None:
    v1.create_node(node("n1"))
    v1.create_namespaced_pod("acme", pod("p1", 7))
    v1.create_namespaced_pod("acme", pod("p2", None))
    pods = v1.list_pod_for_all_namespaces(label_selector="gpupool.io/request")
    assert [p.metadata.name for p in pods.items] == ["p1"]
    assert v1.list_namespaced_pod("acme", label_selector="gpupool.io/request in (7,8)").items
    assert not v1.list_namespaced_pod("acme", field_selector="spec.nodeName=n1").items
    got = v1.read_namespaced_pod("p1", "acme")
    assert got.spec.scheduling_gates[0].name == "gpupool.io/reservation"
    assert got.status.phase == "Pending"
    assert v1.read_node("n1").status.allocatable["nvidia.com/gpu"] == "8"
    assert status_of(lambda: v1.read_namespaced_pod("nope", "acme"))[0] == 404
    assert status_of(lambda: v1.create_namespaced_pod("acme", pod("p1", 7)))[0] == 409


def test_three_patch_types_and_conflict(v1: client.CoreV1Api) -> None:
    created = v1.create_namespaced_pod("acme", pod("p", 1))
    rv = created.metadata.resource_version
    v1.patch_namespaced_pod(
        "p",
        "acme",
        {"metadata": {"labels": {"a": "1"}}},
        _content_type="application/merge-patch+json",
    )
    v1.patch_namespaced_pod(
        "p",
        "acme",
        {"metadata": {"labels": {"b": "2"}}},
        _content_type="application/strategic-merge-patch+json",
    )
    out = v1.patch_namespaced_pod(
        "p", "acme", [{"op": "add", "path": "/metadata/labels/c", "value": "3"}]
    )
    assert {"a", "b", "c"} <= set(out.metadata.labels)
    code, message = status_of(
        lambda: v1.patch_namespaced_pod(
            "p",
            "acme",
            {"metadata": {"resourceVersion": rv, "labels": {"d": "4"}}},
            _content_type="application/merge-patch+json",
        )
    )
    assert code == 409 and "the object has been modified" in message
    code, message = status_of(
        lambda: v1.patch_namespaced_pod(
            "p",
            "acme",
            [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "late"}}],
        )
    )
    assert code == 422 and "only deletion is allowed" in message


def test_eviction_subresource_and_graceful_delete(
    server: FakeApiServer, v1: client.CoreV1Api
) -> None:
    v1.create_node(node("n1"))
    v1.create_namespaced_pod("acme", pod("p", 1, gated=False))
    server.kubelet.step()
    assert v1.read_namespaced_pod("p", "acme").spec.node_name == "n1"
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "p"},
        "deleteOptions": {"gracePeriodSeconds": 20},
    }
    v1.create_namespaced_pod_eviction("p", "acme", body)
    evicted = v1.read_namespaced_pod("p", "acme")
    assert evicted.metadata.deletion_timestamp is not None
    assert evicted.metadata.deletion_grace_period_seconds == 20
    server.kubelet.step()  # the kubelet confirms: the pod is gone
    assert status_of(lambda: v1.read_namespaced_pod("p", "acme"))[0] == 404
    assert status_of(lambda: v1.create_namespaced_pod_eviction("p", "acme", body))[0] == 404
    v1.create_namespaced_pod("acme", pod("gated", 1))
    v1.delete_namespaced_pod("gated", "acme", grace_period_seconds=30)  # unbound: at once
    assert status_of(lambda: v1.read_namespaced_pod("gated", "acme"))[0] == 404


def test_leases(server: FakeApiServer) -> None:
    configuration = client.Configuration(host=server.url)
    api = client.CoordinationV1Api(client.ApiClient(configuration))
    server.store.create("namespaces", "", namespace("gpupool-system"))
    lease = api.create_namespaced_lease(
        "gpupool-system",
        {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
    )
    lease.spec.holder_identity = "b"
    updated = api.replace_namespaced_lease("l", "gpupool-system", lease)
    assert updated.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # still carries the old resourceVersion
    assert status_of(lambda: api.replace_namespaced_lease("l", "gpupool-system", lease))[0] == 409


def test_watch_resumes_from_resource_version_and_expires_with_410(
    server: FakeApiServer, v1: client.CoreV1Api
) -> None:
    listed = v1.list_namespaced_pod("acme")
    v1.create_namespaced_pod("acme", pod("a", 1))
    v1.patch_namespaced_pod(
        "a",
        "acme",
        {"metadata": {"labels": {"x": "1"}}},
        _content_type="application/merge-patch+json",
    )
    v1.delete_namespaced_pod("a", "acme")
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            v1.list_namespaced_pod,
            "acme",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=1,
        )
    ]
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    server.store.compact()
    with pytest.raises(client.ApiException) as err:
        for _ in watch.Watch().stream(
            v1.list_namespaced_pod,
            "acme",
            timeout_seconds=1,
            resource_version=listed.metadata.resource_version,
        ):
            pass
    assert err.value.status == 410


def test_watch_selector_reports_objects_leaving_it_as_deleted(v1: client.CoreV1Api) -> None:
    start = v1.list_namespaced_pod("acme").metadata.resource_version
    v1.create_namespaced_pod("acme", pod("a", 1))
    v1.patch_namespaced_pod(
        "a", "acme", [{"op": "remove", "path": "/metadata/labels/gpupool.io~1request"}]
    )
    events = [
        e["type"]
        for e in watch.Watch().stream(
            v1.list_namespaced_pod,
            "acme",
            resource_version=start,
            timeout_seconds=1,
            label_selector="gpupool.io/request",
        )
    ]
    assert events == ["ADDED", "DELETED"]


def test_injected_faults(server: FakeApiServer, v1: client.CoreV1Api) -> None:
    server.faults.add(Fault(path="/api/v1/nodes", status=500, times=2))
    assert status_of(v1.list_node)[0] == 500
    assert status_of(v1.list_node)[0] == 500
    assert v1.list_node().items == []
    server.faults.add(Fault(method="POST", path="/pods$", delay=0.5))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        v1.create_namespaced_pod("acme", pod("slow", 1), _request_timeout=0.1)
    time.sleep(0.6)
    assert v1.read_namespaced_pod("slow", "acme")  # the write happened; the answer was lost
    server.faults.add(Fault(path="/pods", watch=True, drop_after=1))
    v1.create_namespaced_pod("acme", pod("second", 1))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in watch.Watch().stream(
            v1.list_namespaced_pod, "acme", timeout_seconds=1, resource_version="0"
        ):
            pass
