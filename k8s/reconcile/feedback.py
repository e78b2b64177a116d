"""Pod phases fed back to the scheduler: all pods Succeeded -> the request completed early;
a pod Failed -> the request failed with that pod's reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from k8s.objects import PodView
from k8s.port import RequestState, RequestView


@dataclass(frozen=True)
class Outcome:
    request_id: int
    succeeded: bool
    text: str


def outcome(request: RequestView, pods: Sequence[PodView]) -> Outcome | None:
    """The outcome to report for an active request, ``None`` while its pods still run."""
    if request.state is not RequestState.ACTIVE or not pods:
        return None
    failed = [p for p in pods if p.phase == "Failed"]
    if failed:
        pod = failed[0]
        why = ": ".join(x for x in (pod.reason, pod.message) if x) or "no reason given"
        return Outcome(request.id, False, f"pod {pod.namespace}/{pod.name} failed: {why}")
    if all(p.phase == "Succeeded" for p in pods):
        return Outcome(request.id, True, f"all {len(pods)} pods succeeded")
    return None
