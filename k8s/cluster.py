"""The controller's port to a cluster, with two adapters: :class:`k8s.kube.KubeCluster` (a real
API server through the official client) and :class:`k8s.simulated.SimulatedCluster` (in
process). Reconcilers only see this protocol, so the same code runs on both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from k8s.objects import NamespaceView, NodeView, PodView


class ClusterError(Exception):
    """A cluster call failed. ``temporary`` errors (conflicts, 5xx, timeouts) are retried."""

    temporary = False

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NotFound(ClusterError):
    """The object is gone; for deletes and evictions this counts as success."""


class Conflict(ClusterError):
    """A stale write (409): re-read and decide again."""

    temporary = True


class Refused(ClusterError):
    """The API server refused the write for good (400/403/422), or an eviction was refused
    by a disruption budget (429)."""


class Unavailable(ClusterError):
    """5xx, timeouts, dropped connections after the adapter's own retries."""

    temporary = True


@dataclass(frozen=True)
class Snapshot:
    """What the cluster looks like now (from the watch caches, or read directly)."""

    nodes: Sequence[NodeView]
    namespaces: Sequence[NamespaceView]
    pods: Sequence[PodView]


@dataclass(frozen=True)
class EventSpec:
    """A core/v1 Event about a pod."""

    pod: PodView
    reason: str
    message: str
    type: str = "Normal"  # Normal | Warning


@dataclass
class LeaseRecord:
    """The fields of a coordination.k8s.io/v1 Lease that leader election uses."""

    holder: str
    duration_s: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int = 0
    resource_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


class Cluster(Protocol):
    """The calls reconcilers make. Writes raise :class:`ClusterError` subclasses."""

    def snapshot(self) -> Snapshot: ...

    def get_pod(self, namespace: str, name: str) -> PodView | None:
        """Read one pod from the API (not a cache), ``None`` if it does not exist."""
        ...

    def patch_pod(self, pod: PodView, ops: list[dict[str, Any]]) -> PodView:
        """Apply a JSON patch to a pod (ops built from ``pod``'s resourceVersion)."""
        ...

    def evict_pod(self, pod: PodView, grace_s: int) -> None: ...

    def delete_pod(self, pod: PodView, grace_s: int | None) -> None: ...

    def create_event(self, event: EventSpec) -> None: ...

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None: ...

    def ensure_quota(
        self, namespace: str, name: str, hard: Mapping[str, str], labels: Mapping[str, str]
    ) -> bool:
        """Create or patch a ResourceQuota to exactly ``hard``; True if it wrote anything."""
        ...

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None: ...

    def create_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord: ...

    def update_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease; :class:`Conflict` if ``record.resource_version`` is stale."""
        ...

    def wait_for_change(self, timeout: float) -> bool:
        """Block until the cluster changed or ``timeout`` passed; True if it changed."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...
