"""Grouping of request pods and the verdict on each pod's request, shared by the reconcilers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from k8s.objects import PodView
from k8s.port import RequestState, RequestView


@dataclass(frozen=True)
class Standing:
    """Whether a pod's request lets it hold GPUs now; if not, the Event reason and message."""

    open: bool
    reason: str = ""
    message: str = ""
    request: RequestView | None = None


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "?"


def standing(
    pod: PodView,
    requests: Mapping[int, RequestView],
    tenant_of_ns: Mapping[str, str],
    tenants: Mapping[str, bool],
    now: datetime,
) -> Standing:
    """Judge a pod's request: unknown, foreign, of an inactive tenant, not yet started or
    ended requests close the door, each with a reason a tenant can act on."""
    rid = pod.request_id
    if rid is None:
        return Standing(
            False,
            "InvalidRequestLabel",
            f"label gpupool.io/request={pod.request_label!r} is not a request id",
        )
    tenant = tenant_of_ns.get(pod.namespace)
    if tenant is None:
        return Standing(
            False,
            "NotATenantNamespace",
            f"namespace {pod.namespace} has no gpupool.io/tenant label",
        )
    request = requests.get(rid)
    if request is None:
        return Standing(False, "UnknownRequest", f"request {rid} does not exist")
    if request.tenant != tenant:
        return Standing(
            False, "ForeignRequest", f"request {rid} belongs to another tenant, not to {tenant}"
        )
    if not tenants.get(tenant, False):
        return Standing(False, "TenantInactive", f"tenant {tenant} is not active", request)
    if request.state.ended:
        return Standing(
            False,
            "RequestEnded",
            f"request {rid} is {request.state.value}; its pods may not run",
            request,
        )
    if request.window_open(now):
        return Standing(True, request=request)
    if request.state is RequestState.PENDING or request.window_start is None:
        return Standing(
            False,
            "WaitingForReservation",
            f"request {rid} is pending: it has no reservation yet",
            request,
        )
    if request.window_end is not None and now >= request.window_end:
        return Standing(
            False,
            "RequestEnded",
            f"the reservation of request {rid} ended at {_stamp(request.window_end)}",
            request,
        )
    return Standing(
        False,
        "WaitingForReservation",
        f"request {rid} is planned; its reservation starts at {_stamp(request.window_start)}",
        request,
    )


def by_request(pods: Sequence[PodView]) -> dict[int, list[PodView]]:
    """Pods grouped by request id (pods with an invalid label are left out), by name."""
    groups: dict[int, list[PodView]] = {}
    for pod in sorted(pods, key=lambda p: p.key):
        if pod.request_id is not None:
            groups.setdefault(pod.request_id, []).append(pod)
    return groups
