"""What the API simulation refuses, checked through the store as a client meets it."""

from __future__ import annotations

from typing import Any

import pytest

from k8s.apisim.errors import ApiError
from k8s.apisim.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from k8s.apisim.store import Store
from tests.k8s.helpers import FakeClock, namespace, pod

HOST = "kubernetes.io/hostname"


def affinity(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(t)} for t in terms]
            }
        }
    }


A = {"key": "zone", "operator": "In", "values": ["a"]}
H = {"key": HOST, "operator": "In", "values": ["n1"]}


@pytest.fixture
def store() -> Store:
    s = Store(FakeClock())
    s.create("namespaces", "", namespace("acme", "acme"))
    return s


def refused(call: Any, code: int = 422) -> str:
    with pytest.raises(ApiError) as err:
        call()
    assert err.value.code == code, err.value.message
    return err.value.message


def test_gate_may_be_removed_but_not_added(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1))
    msg = refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            MERGE_PATCH,
            {"spec": {"schedulingGates": [{"name": "gpupool.io/reservation"}, {"name": "x"}]}},
        )
    )
    assert "only deletion is allowed, but found new scheduling gate 'x'" in msg
    out = store.patch(
        "pods",
        "acme",
        "p",
        STRATEGIC_MERGE_PATCH,
        {"spec": {"schedulingGates": [{"name": "gpupool.io/reservation", "$patch": "delete"}]}},
    )
    assert out["spec"]["schedulingGates"] == []
    msg = refused(
        lambda: store.patch(
            "pods", "acme", "p", JSON_PATCH, [{"op": "remove", "path": "/spec/schedulingGates/0"}]
        )
    )
    assert "out of bounds" in msg  # removing a gate that is not there


def test_gated_pod_affinity_may_only_narrow(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1, affinity=affinity([A])))
    out = store.patch(
        "pods",
        "acme",
        "p",
        JSON_PATCH,
        [{"op": "add", "path": "/spec/affinity", "value": affinity([A, H])}],
    )
    assert out["spec"]["affinity"] == affinity([A, H])
    msg = refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            JSON_PATCH,
            [{"op": "add", "path": "/spec/affinity", "value": affinity([H])}],
        )
    )
    assert "only additions are allowed (no mutations or deletions)" in msg
    msg = refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            JSON_PATCH,
            [{"op": "add", "path": "/spec/affinity", "value": affinity([A, H], [H])}],
        )
    )
    assert "no additions/deletions to non-empty NodeSelectorTerms list are allowed" in msg


def test_affinity_and_gate_change_together_while_gated(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1))
    out = store.patch(
        "pods",
        "acme",
        "p",
        JSON_PATCH,
        [
            {"op": "add", "path": "/spec/affinity", "value": affinity([H])},
            {"op": "remove", "path": "/spec/schedulingGates/0"},
        ],
    )
    assert out["spec"]["schedulingGates"] == []


def test_ungated_pod_affinity_is_immutable(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1, gated=False))
    msg = refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            JSON_PATCH,
            [{"op": "add", "path": "/spec/affinity", "value": affinity([H])}],
        )
    )
    assert "pod updates may not change fields other than" in msg
    msg = refused(
        lambda: store.patch(
            "pods", "acme", "p", MERGE_PATCH, {"spec": {"nodeSelector": {"a": "b"}}}
        )
    )
    assert "pod updates may not change fields" in msg


def test_gated_node_selector_only_grows(store: Store) -> None:
    body = pod("p", 1)
    body["spec"]["nodeSelector"] = {"a": "b"}
    store.create("pods", "acme", body)
    store.patch("pods", "acme", "p", MERGE_PATCH, {"spec": {"nodeSelector": {"c": "d"}}})
    msg = refused(
        lambda: store.patch(
            "pods", "acme", "p", MERGE_PATCH, {"spec": {"nodeSelector": {"a": "z"}}}
        )
    )
    assert "only additions to spec.nodeSelector are allowed" in msg


def test_images_labels_and_tolerations_additions_are_allowed(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1, gated=False))
    out = store.patch(
        "pods",
        "acme",
        "p",
        STRATEGIC_MERGE_PATCH,
        {
            "metadata": {"labels": {"x": "y"}},
            "spec": {
                "containers": [{"name": "main", "image": "trainer:2"}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
            },
        },
    )
    assert out["spec"]["containers"][0]["image"] == "trainer:2"
    refused(lambda: store.patch("pods", "acme", "p", MERGE_PATCH, {"spec": {"tolerations": []}}))
    refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            STRATEGIC_MERGE_PATCH,
            {
                "spec": {
                    "containers": [
                        {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "4"}}}
                    ]
                }
            },
        )
    )


def test_status_is_not_writable_through_the_pod(store: Store) -> None:
    store.create("pods", "acme", pod("p", 1))
    out = store.patch("pods", "acme", "p", MERGE_PATCH, {"status": {"phase": "Succeeded"}})
    assert out["status"]["phase"] == "Pending"


def test_create_rules(store: Store) -> None:
    body = pod("p", 1)
    body["spec"]["nodeName"] = "n1"
    assert "cannot be set until all schedulingGates have been cleared" in refused(
        lambda: store.create("pods", "acme", body)
    )
    dup = pod("d", 1)
    dup["spec"]["schedulingGates"] *= 2
    assert "Duplicate value" in refused(lambda: store.create("pods", "acme", dup))
    mismatch = pod("m", 1, gpus=2)
    mismatch["spec"]["containers"][0]["resources"]["requests"] = {"nvidia.com/gpu": "1"}
    assert "must be equal to nvidia.com/gpu limit" in refused(
        lambda: store.create("pods", "acme", mismatch)
    )
    no_limit = pod("n", 1, gpus=0)
    no_limit["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert "Limit must be set" in refused(lambda: store.create("pods", "acme", no_limit))
    assert refused(lambda: store.create("pods", "nowhere", pod("x", 1)), 404)
    out = store.create("pods", "acme", pod("ok", 1, gpus=2))
    assert out["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "2"}
    assert out["status"]["conditions"][0]["reason"] == "SchedulingGated"
    assert refused(lambda: store.create("pods", "acme", pod("ok", 1, gpus=2)), 409)


def test_stale_resource_version_conflicts(store: Store) -> None:
    first = store.create("pods", "acme", pod("p", 1))
    store.patch("pods", "acme", "p", MERGE_PATCH, {"metadata": {"labels": {"x": "1"}}})
    stale = first["metadata"]["resourceVersion"]
    assert refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            MERGE_PATCH,
            {"metadata": {"resourceVersion": stale, "labels": {"x": "2"}}},
        ),
        409,
    )
    assert refused(
        lambda: store.patch(
            "pods",
            "acme",
            "p",
            JSON_PATCH,
            [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}],
        ),
        409,
    )
    assert refused(lambda: store.update("pods", "acme", "p", first), 409)


def test_quota_counts_gated_pods_at_creation(store: Store) -> None:
    store.create(
        "resourcequotas",
        "acme",
        {"metadata": {"name": "q"}, "spec": {"hard": {"requests.nvidia.com/gpu": "3"}}},
    )
    store.create("pods", "acme", pod("a", 1, gpus=2))
    msg = refused(lambda: store.create("pods", "acme", pod("b", 1, gpus=2)), 403)
    assert "exceeded quota: q" in msg
    store.create("pods", "acme", pod("c", 1))
