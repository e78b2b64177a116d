"""Inventory: the cluster's GPU nodes as the scheduler's pool."""

from __future__ import annotations

from collections.abc import Sequence

from k8s.objects import NodeView
from k8s.port import ObservedNode
from k8s.settings import ControllerSettings

# The taint that cordoning adds; the node already reads as cordoned.
_CORDON_TAINT = "node.kubernetes.io/unschedulable"


def observe_nodes(nodes: Sequence[NodeView], settings: ControllerSettings) -> list[ObservedNode]:
    """GPU nodes (allocatable ``nvidia.com/gpu`` > 0) with their class and schedulability,
    sorted by name. Cordoned, NotReady or NoSchedule-tainted nodes are marked unschedulable,
    so they leave the pool; nodes without GPUs are not part of it at all."""
    observed = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.gpus <= 0:
            continue
        taints = [
            t
            for t in node.no_schedule_taints
            if t != _CORDON_TAINT and t not in settings.tolerated_taints
        ]
        if node.unschedulable:
            reason = "cordoned"
        elif not node.ready:
            reason = "NotReady"
        elif taints:
            reason = f"NoSchedule taint {taints[0]}"
        else:
            reason = ""
        observed.append(
            ObservedNode(
                name=node.name,
                gpu_class=settings.gpu_class(node.product),
                gpus=node.gpus,
                schedulable=not reason,
                reason=reason,
            )
        )
    return observed
