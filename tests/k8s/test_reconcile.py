"""The pure reconcilers, on plain data."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from k8s.apisim.store import Store
from k8s.objects import NamespaceView, NodeView, PodView
from k8s.port import RequestState, RequestView
from k8s.reconcile.admission import Admit, Hold, admit_ops, admit_request
from k8s.reconcile.ending import Evict, ForceDelete, end_pod, overflow
from k8s.reconcile.feedback import outcome
from k8s.reconcile.inventory import observe_nodes
from k8s.reconcile.requests import standing
from k8s.reconcile.tenants import namespace_name, namespaces_to_create
from k8s.settings import ControllerSettings
from tests.k8s.helpers import T0, FakeClock, namespace, node, pod

HOSTS = {"n0": "n0", "n1": "n1", "n2": "n2"}


def view(raw: dict[str, Any], ns: str = "acme", **meta: Any) -> PodView:
    raw["metadata"].update(
        {"namespace": ns, "uid": f"uid-{raw['metadata']['name']}", "resourceVersion": "7", **meta}
    )
    return PodView.parse(raw)


def request(
    rid: int = 1,
    state: RequestState = RequestState.ACTIVE,
    tenant: str = "acme",
    allocation: dict[str, int] | None = None,
    per_node: int = 4,
) -> RequestView:
    return RequestView(
        id=rid,
        tenant=tenant,
        state=state,
        gpus_per_node=per_node,
        allocation={"n0": 4, "n1": 4} if allocation is None else allocation,
        window_start=T0,
        window_end=T0 + timedelta(hours=1),
    )


def test_inventory_classes_and_reasons() -> None:
    settings = ControllerSettings(gpu_classes={"NVIDIA-H100-80GB-HBM3": "H100-80GB"})
    nodes = [
        NodeView.parse(n)
        for n in (
            node("a"),
            node("b", unschedulable=True),
            node("c", ready=False),
            node("d", taints=[{"key": "maintenance", "effect": "NoSchedule"}]),
            node("e", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
            node("f", gpus=0),
            node("g", product="A100-SXM4-40GB"),
            node("h", product=""),
        )
    ]
    observed = {n.name: n for n in observe_nodes(nodes, settings)}
    assert "f" not in observed  # no GPUs: not part of the pool
    assert observed["a"].gpu_class == "H100-80GB" and observed["a"].schedulable
    assert (observed["b"].schedulable, observed["b"].reason) == (False, "cordoned")
    assert observed["c"].reason == "NotReady"
    assert observed["d"].reason == "NoSchedule taint maintenance"
    assert observed["e"].schedulable  # the GPU taint is tolerated by GPU pods
    assert observed["g"].gpu_class == "A100-SXM4-40GB"
    assert observed["h"].gpu_class == "unknown"


def test_standing_reasons() -> None:
    ns = {"acme": "acme", "beta": "beta"}
    tenants = {"acme": True, "beta": True, "idle": False}
    reqs = {
        1: request(1),
        2: request(2, tenant="beta"),
        3: request(3, RequestState.EXPIRED),
        4: request(4, RequestState.PENDING),
        5: request(5, RequestState.PLANNED),
    }
    now = T0 + timedelta(minutes=5)

    def reason(p: PodView, at: Any = now) -> str:
        return standing(p, reqs, ns, tenants, at).reason

    assert standing(view(pod("a", 1)), reqs, ns, tenants, now).open
    assert reason(view(pod("a", "x1"))) == "InvalidRequestLabel"
    assert reason(view(pod("a", 1), ns="default")) == "NotATenantNamespace"
    assert reason(view(pod("a", 99))) == "UnknownRequest"
    assert reason(view(pod("a", 2))) == "ForeignRequest"
    assert reason(view(pod("a", 3))) == "RequestEnded"
    assert reason(view(pod("a", 4))) == "WaitingForReservation"
    assert reason(view(pod("a", 5)), T0 - timedelta(minutes=1)) == "WaitingForReservation"
    assert (
        "starts at 2030-01-07T09:00:00Z"
        in standing(view(pod("a", 5)), reqs, ns, tenants, T0 - timedelta(minutes=1)).message
    )
    assert reason(view(pod("a", 1)), T0 + timedelta(hours=2)) == "RequestEnded"
    # A planned request whose start has passed still waits for the cycle to open it.
    assert not standing(view(pod("a", 5)), reqs, ns, tenants, now).open
    assert standing(view(pod("a", 1)), reqs, ns, tenants, now).open
    assert standing(view(pod("a", 1)), reqs, ns, {"acme": False}, now).reason == "TenantInactive"


def test_admission_never_exceeds_reserved_gpus_per_node() -> None:
    pods = [view(pod(f"p{i}", 1, gpus=2)) for i in range(5)]
    decisions = admit_request(request(), pods, HOSTS)
    admitted = [d for d in decisions if isinstance(d, Admit)]
    held = [d for d in decisions if isinstance(d, Hold)]
    per_node: dict[str, int] = {}
    for d in admitted:
        per_node[d.node] = per_node.get(d.node, 0) + d.pod.gpus
    assert per_node == {"n0": 4, "n1": 4}
    assert len(held) == 1 and held[0].reason == "ReservationFull"


def test_admission_counts_pods_already_admitted_and_too_large_ones() -> None:
    running = view(
        pod(
            "run",
            1,
            gpus=4,
            gated=False,
            affinity={
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": ["n0"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        )
    )
    big = view(pod("big", 1, gpus=8))
    waiting = view(pod("w", 1, gpus=4))
    decisions = admit_request(request(), [running, big, waiting], HOSTS)
    assert [(type(d).__name__, d.pod.name) for d in decisions] == [("Hold", "big"), ("Admit", "w")]
    assert decisions[0].reason == "GPURequestTooLarge"  # type: ignore[union-attr]
    assert decisions[1].node == "n1"  # type: ignore[union-attr]


def test_admission_skips_reserved_nodes_missing_from_cluster() -> None:
    decisions = admit_request(request(allocation={"gone": 4}), [view(pod("p", 1))], HOSTS)
    assert isinstance(decisions[0], Hold) and "missing from the cluster: gone" in (
        decisions[0].message
    )


def test_admit_ops_narrow_every_existing_term_and_apply_on_the_store() -> None:
    raw = pod(
        "p",
        1,
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    ]
                }
            },
            "podAntiAffinity": {},
        },
    )
    store = Store(FakeClock())
    store.create("namespaces", "", namespace("acme", "acme"))
    created = PodView.parse(store.create("pods", "acme", raw))
    ops = admit_ops(created, "host-1")
    assert ops is not None
    out = PodView.parse(store.patch("pods", "acme", "p", "application/json-patch+json", ops))
    assert not out.gated
    terms = out.required_terms()
    assert len(terms) == 2
    for term in terms:
        assert term["matchExpressions"][-1] == {
            "key": "kubernetes.io/hostname",
            "operator": "In",
            "values": ["host-1"],
        }
    assert out.pinned_node() == "host-1"
    assert admit_ops(out, "host-1") is None  # already admitted: nothing to do


def test_overflow_and_ending() -> None:
    settings = ControllerSettings(eviction_grace_s=30, force_delete_after_s=60)
    on_n2 = view(pod("x", 1, gpus=1, gated=False))
    on_n2.raw["spec"]["nodeName"] = "n2"
    on_n2 = PodView.parse(on_n2.raw)
    many = []
    for i in range(5):
        p = view(pod(f"m{i}", 1, gpus=1, gated=False))
        p.raw["spec"]["nodeName"] = "n0"
        many.append(PodView.parse(p.raw))
    over = overflow(request(), [on_n2, *many], {})
    assert sorted(p.name for p, _ in over) == ["m4", "x"]
    verdict = standing(on_n2, {}, {"acme": "acme"}, {"acme": True}, T0)
    assert isinstance(end_pod(on_n2, verdict, T0, None, settings), Evict)
    assert end_pod(view(pod("g", 1)), verdict, T0, None, settings) is None  # gated: no GPUs
    refused_since = T0
    assert isinstance(
        end_pod(on_n2, verdict, T0 + timedelta(seconds=89), refused_since, settings), Evict
    )
    assert isinstance(
        end_pod(on_n2, verdict, T0 + timedelta(seconds=90), refused_since, settings), ForceDelete
    )
    terminating = on_n2.raw | {
        "metadata": on_n2.raw["metadata"] | {"deletionTimestamp": "2030-01-07T09:00:30Z"}
    }
    term = PodView.parse(terminating)
    assert end_pod(term, verdict, T0 + timedelta(seconds=89), None, settings) is None
    assert isinstance(
        end_pod(term, verdict, T0 + timedelta(seconds=90), None, settings), ForceDelete
    )


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Succeeded", "Succeeded"], (True, "all 2 pods succeeded")),
        (["Succeeded", "Running"], None),
        (["Running", "Failed"], (False, "pod acme/p1 failed: Error: container main exited")),
        ([], None),
    ],
)
def test_feedback(phases: list[str], expected: tuple[bool, str] | None) -> None:
    pods = []
    for i, phase in enumerate(phases):
        raw = pod(f"p{i}", 1, gated=False)
        raw["status"] = {"phase": phase}
        if phase == "Failed":
            raw["status"]["containerStatuses"] = [
                {"name": "main", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
            ]
        pods.append(view(raw))
    result = outcome(request(), pods)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert result.succeeded == expected[0] and result.text.startswith(expected[1])
    assert outcome(request(state=RequestState.PLANNED), pods) is None


def test_namespaces_to_create() -> None:
    settings = ControllerSettings(create_namespaces=True, namespace_template="t-{tenant}")
    existing = [NamespaceView("t-acme", {"gpupool.io/tenant": "acme"})]
    wanted = namespaces_to_create(
        {"acme": True, "Beta_Labs": True, "off": False, "!!": True}, existing, settings
    )
    assert wanted == {"t-beta-labs": "Beta_Labs"}
    assert namespace_name("x" * 70, settings) is None
    assert namespaces_to_create({"z": True}, [], ControllerSettings()) == {}


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="renew_interval_s"):
        ControllerSettings(lease_duration_s=5, renew_interval_s=10)
    with pytest.raises(ValueError, match="namespace_template"):
        ControllerSettings(namespace_template="fixed")
