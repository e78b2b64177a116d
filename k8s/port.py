"""The seam between the controller and the scheduler.

The controller reads requests and tenants and reports cluster facts only through
:class:`SchedulerPort`, so that it can be tested with :class:`k8s.memory.InMemoryScheduler` and
wired to the database-backed services without importing them here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injected so tests control time."""


def utc_now() -> datetime:
    """The wall clock, the default :data:`Clock`."""
    return datetime.now(UTC)


class RequestState(StrEnum):
    """Request states as the scheduler names them (see DESIGN.md)."""

    PENDING = "pending"
    PLANNED = "planned"
    ACTIVE = "active"
    COMPLETED = "completed"
    EXPIRED = "expired"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """True for states after which the request's pods may no longer hold GPUs."""
        return self not in (RequestState.PENDING, RequestState.PLANNED, RequestState.ACTIVE)


@dataclass(frozen=True)
class RequestView:
    """What the controller needs to know about one request.

    Pods carry the label ``gpupool.io/request=<id>``; ``allocation`` maps node name to the GPUs
    reserved there and is empty unless the request is planned or active; the window is the
    reservation's ``[window_start, window_end)`` in UTC, ``None`` when there is no reservation.
    """

    id: int
    tenant: str
    state: RequestState
    gpus_per_node: int
    allocation: Mapping[str, int] = field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None

    def window_open(self, now: datetime) -> bool:
        """True when the request is active and ``now`` lies inside its window. A planned
        request whose start has passed waits for the scheduler's cycle to open it: until then
        the plan may still move it, and admitting its pods could double-book a node."""
        if self.state is not RequestState.ACTIVE or not self.allocation:
            return False
        if self.window_start is None or self.window_end is None:
            return False
        return self.window_start <= now < self.window_end


@dataclass(frozen=True)
class ObservedNode:
    """A GPU node as the cluster shows it. ``reason`` says why it is not schedulable
    (``"cordoned"``, ``"NotReady"``, ``"NoSchedule taint <key>"``), empty when it is."""

    name: str
    gpu_class: str
    gpus: int
    schedulable: bool
    reason: str = ""


class SchedulerPort(Protocol):
    """What the controller asks of, and tells, the scheduler. Calls may block on a database;
    an exception from any call fails the current reconcile pass, which is retried."""

    def get_requests(self, ids: Collection[int]) -> Mapping[int, RequestView]:
        """The requests with these ids; unknown ids are absent from the result."""
        ...

    def tenants(self) -> Mapping[str, bool]:
        """Tenant name -> whether the tenant is active."""
        ...

    def sync_nodes(self, nodes: Sequence[ObservedNode]) -> bool:
        """Replace the pool's view of the cluster's GPU nodes; True if the pool changed (the
        scheduler then re-plans). Nodes absent from ``nodes`` have left the cluster."""
        ...

    def report_succeeded(self, request_id: int, detail: str) -> None:
        """All pods of an active request succeeded: the request completed early."""
        ...

    def report_failed(self, request_id: int, reason: str) -> None:
        """A pod of an active request failed: the request failed, ``reason`` says why."""
        ...

    def planned_gpus_by_tenant(self) -> Mapping[str, int]:
        """GPUs of each tenant's planned and active reservations (sizes the ResourceQuota)."""
        ...
