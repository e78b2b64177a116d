"""Admission: which gated pods of an open reservation may go, and to which reserved node.

A pod is pinned to ONE reserved node (required node affinity ``kubernetes.io/hostname In
[node]``, appended to every existing term so the tenant's own constraints still hold) and
ungated in the same patch, so per node never more GPUs are ungated than the reservation holds
there. The patch carries the resourceVersion it was computed from: a stale one gets 409.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k8s.objects import NodeView, PodView
from k8s.port import RequestView
from k8s.settings import GATE, HOSTNAME_LABEL


@dataclass(frozen=True)
class Admit:
    """Pin ``pod`` to ``node`` (whose hostname label is ``hostname``) and remove the gate."""

    pod: PodView
    node: str
    hostname: str


@dataclass(frozen=True)
class Hold:
    """Leave ``pod`` gated; the Event says why."""

    pod: PodView
    reason: str
    message: str
    warning: bool = False


def hostnames(nodes: Sequence[NodeView]) -> dict[str, str]:
    """Node name -> value of its ``kubernetes.io/hostname`` label (which may differ)."""
    return {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}


def admit_request(
    request: RequestView, pods: Sequence[PodView], node_hosts: Mapping[str, str]
) -> list[Admit | Hold]:
    """Decide for the gated pods of one request whose reservation window is open."""
    host_to_node = {h: n for n, h in node_hosts.items()}
    free = {n: g for n, g in request.allocation.items() if g > 0 and n in node_hosts}
    unplaced = 0
    for pod in pods:
        if not pod.holds_gpus:
            continue
        pinned = pod.pinned_node()
        node = pod.node_name or (host_to_node.get(pinned, pinned) if pinned else None)
        if node in free:
            free[node] -= pod.gpus
        else:
            unplaced += pod.gpus
    # GPUs held by pods we cannot place on a reserved node (ungated by someone else) still
    # count: take them from the nodes with most room, so we never over-admit.
    for node in sorted(free, key=lambda n: -free[n]):
        taken = min(unplaced, max(free[node], 0))
        free[node] -= taken
        unplaced -= taken
    largest = max(request.allocation.values(), default=0)
    decisions: list[Admit | Hold] = []
    for pod in pods:
        if not pod.gated or pod.finished or pod.terminating:
            continue
        if pod.gpus > largest:
            decisions.append(
                Hold(
                    pod,
                    "GPURequestTooLarge",
                    f"pod asks for {pod.gpus} GPUs but request {request.id} reserves at most "
                    f"{largest} on one node",
                    warning=True,
                )
            )
            continue
        fitting = sorted((g, n) for n, g in free.items() if g >= pod.gpus)
        if not fitting:
            missing = sorted(set(request.allocation) - set(node_hosts))
            detail = (
                f"; reserved nodes missing from the cluster: {', '.join(missing)}"
                if (missing)
                else ""
            )
            decisions.append(
                Hold(
                    pod,
                    "ReservationFull",
                    f"the GPUs reserved for request {request.id} are all taken by its other "
                    f"pods (pod asks for {pod.gpus}){detail}",
                    warning=True,
                )
            )
            continue
        _, node = fitting[0]  # best fit: the fullest node that still has room
        free[node] -= pod.gpus
        decisions.append(Admit(pod, node, node_hosts[node]))
    return decisions


def admit_ops(pod: PodView, hostname: str) -> list[dict[str, Any]] | None:
    """The JSON patch that pins ``pod`` to ``hostname`` and removes the gate, or ``None`` if
    the pod is no longer gated (already admitted: nothing to do)."""
    if GATE not in pod.gates:
        return None
    expression = {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]}
    affinity = copy.deepcopy(pod.affinity) if pod.affinity else {}
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        # Terms are ORed: narrowing means adding the node to every one of them.
        for term in terms:
            expressions = term.setdefault("matchExpressions", [])
            if expression not in expressions:
                expressions.append(expression)
    else:
        terms = [{"matchExpressions": [expression]}]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    index = pod.gates.index(GATE)
    return [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": pod.resource_version},
        {"op": "add", "path": "/spec/affinity", "value": affinity},
        {"op": "test", "path": f"/spec/schedulingGates/{index}/name", "value": GATE},
        {"op": "remove", "path": f"/spec/schedulingGates/{index}"},
    ]
