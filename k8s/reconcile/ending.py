"""Ending: pods holding GPUs without an open reservation are evicted, then deleted.

A pod is evicted (Eviction API, grace period) when its request ended, was preempted, is
unknown or foreign, or when it sits outside what the reservation holds (a node it does not
reserve, or more GPUs on a node than reserved). A pod still there ``force_delete_after_s``
after its grace period, or whose eviction keeps being refused that long, is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from k8s.objects import PodView
from k8s.port import RequestView
from k8s.reconcile.requests import Standing
from k8s.settings import ControllerSettings


@dataclass(frozen=True)
class Evict:
    pod: PodView
    reason: str
    message: str


@dataclass(frozen=True)
class ForceDelete:
    pod: PodView
    message: str


def _deletion_deadline(pod: PodView) -> datetime | None:
    stamp = (pod.raw.get("metadata") or {}).get("deletionTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def overflow(
    request: RequestView, pods: Sequence[PodView], node_of_host: Mapping[str, str]
) -> list[tuple[PodView, str]]:
    """Pods of an open reservation beyond what it holds: on an unreserved node, or past the
    GPUs reserved on their node (the newest go first)."""
    out: list[tuple[PodView, str]] = []
    used: dict[str, int] = {}
    holding = [p for p in pods if p.holds_gpus and not p.terminating]
    holding.sort(key=lambda p: ((p.raw.get("metadata") or {}).get("creationTimestamp", ""), p.name))
    for pod in holding:
        pinned = pod.pinned_node()
        node = pod.node_name or (node_of_host.get(pinned, pinned) if pinned else None)
        if node is None:
            continue  # not placed yet; admission accounts for it
        reserved = request.allocation.get(node, 0)
        if reserved == 0:
            out.append((pod, f"node {node} is not reserved for request {request.id}"))
            continue
        used[node] = used.get(node, 0) + pod.gpus
        if used[node] > reserved:
            out.append(
                (
                    pod,
                    f"request {request.id} reserves {reserved} GPUs on {node}; "
                    f"this pod would exceed them",
                )
            )
    return out


def end_pod(
    pod: PodView,
    verdict: Standing,
    now: datetime,
    first_refusal: datetime | None,
    settings: ControllerSettings,
) -> Evict | ForceDelete | None:
    """What to do with one pod holding GPUs whose request is not open (or that overflows)."""
    if not pod.holds_gpus:
        return None
    slack = timedelta(seconds=settings.force_delete_after_s)
    if pod.terminating:
        deadline = _deletion_deadline(pod)
        if deadline is not None and now >= deadline + slack:
            return ForceDelete(
                pod,
                f"still terminating {settings.force_delete_after_s}s after "
                f"its grace period: {verdict.message}",
            )
        return None
    if (
        first_refusal is not None
        and now >= first_refusal + timedelta(seconds=settings.eviction_grace_s) + slack
    ):
        return ForceDelete(
            pod, f"eviction refused since {first_refusal:%H:%M:%S}: {verdict.message}"
        )
    return Evict(pod, verdict.reason, verdict.message)


def next_force_delete(pod: PodView, settings: ControllerSettings) -> datetime | None:
    """When a terminating pod becomes due for deletion (to wake the controller then)."""
    deadline = _deletion_deadline(pod)
    if deadline is None:
        return None
    return deadline + timedelta(seconds=settings.force_delete_after_s)
