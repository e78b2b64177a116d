"""The in-process simulated cluster: the embedded default when there is no kubeconfig.

Nodes come from the static inventory; pods are created by the demo (or a test) with
:meth:`SimulatedCluster.submit_pods`, gated as a tenant would create them; a simulated
scheduler and kubelet bind ungated pods and run them for a given time on the injected clock.
The objects live in a :class:`~k8s.apisim.store.Store`, which refuses exactly what the fake
API server refuses, so the controller meets the same rules here as against a real cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from k8s.apisim.errors import ApiError
from k8s.apisim.kubelet import EXIT_CODE, RUN_SECONDS, KubeletSim
from k8s.apisim.store import Store
from k8s.cluster import (
    ClusterError,
    Conflict,
    EventSpec,
    LeaseRecord,
    NotFound,
    Refused,
    Snapshot,
    Unavailable,
)
from k8s.objects import NamespaceView, NodeView, PodView
from k8s.port import Clock, utc_now
from k8s.settings import (
    GATE,
    GPU_RESOURCE,
    HOSTNAME_LABEL,
    PRODUCT_LABEL,
    REQUEST_LABEL,
    TENANT_LABEL,
)
from k8s.wire import event_body, lease_body, lease_record

T = TypeVar("T")


@dataclass(frozen=True)
class SimNode:
    """A node of the static inventory."""

    name: str
    gpu_class: str
    gpus: int


def _translate(exc: ApiError) -> ClusterError:
    if exc.code == 404:
        return NotFound(exc.message, exc.code)
    if exc.code == 409:
        return Conflict(exc.message, exc.code)
    if exc.code >= 500:
        return Unavailable(exc.message, exc.code)
    return Refused(exc.message, exc.code)


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ApiError as exc:
        raise _translate(exc) from exc


class SimulatedCluster:
    """:class:`~k8s.cluster.Cluster` over an in-memory store, with a simulated kubelet."""

    def __init__(
        self, nodes: Sequence[SimNode] = (), *, clock: Clock = utc_now, store: Store | None = None
    ) -> None:
        self.clock = clock
        self.store = store or Store(clock)
        self.kubelet = KubeletSim(self.store)
        self._seen_rv = -1
        self._lock = threading.Lock()
        for node in nodes:
            self.add_node(node)

    # -- the simulated world -----------------------------------------------------------
    def add_node(self, node: SimNode, *, labels: Mapping[str, str] | None = None) -> None:
        self.store.create(
            "nodes",
            "",
            {
                "metadata": {
                    "name": node.name,
                    "labels": {
                        HOSTNAME_LABEL: node.name,
                        PRODUCT_LABEL: node.gpu_class,
                        **(labels or {}),
                    },
                },
                "status": {
                    "allocatable": {GPU_RESOURCE: str(node.gpus)},
                    "capacity": {GPU_RESOURCE: str(node.gpus)},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
        )

    def set_node_ready(self, name: str, ready: bool) -> None:
        def mutate(node: dict[str, Any]) -> None:
            node["status"]["conditions"] = [
                {"type": "Ready", "status": "True" if ready else "False"}
            ]

        self.store.update_status("nodes", "", name, mutate)

    def ensure_namespace(self, name: str, tenant: str) -> None:
        try:
            self.store.create(
                "namespaces", "", {"metadata": {"name": name, "labels": {TENANT_LABEL: tenant}}}
            )
        except ApiError as exc:
            if exc.code != 409:
                raise

    def submit_pods(
        self,
        namespace: str,
        request_id: int,
        count: int,
        gpus_per_pod: int,
        *,
        run_seconds: float | None = None,
        exit_code: int = 0,
        prefix: str | None = None,
    ) -> list[str]:
        """Create ``count`` gated pods for a request, as a tenant's job would."""
        names = []
        for i in range(count):
            name = f"{prefix or f'req-{request_id}'}-{i}"
            annotations = {}
            if run_seconds is not None:
                annotations[RUN_SECONDS] = str(run_seconds)
            if exit_code:
                annotations[EXIT_CODE] = str(exit_code)
            self.store.create(
                "pods",
                namespace,
                {
                    "metadata": {
                        "name": name,
                        "labels": {REQUEST_LABEL: str(request_id)},
                        "annotations": annotations,
                    },
                    "spec": {
                        "schedulingGates": [{"name": GATE}],
                        "containers": [
                            {
                                "name": "main",
                                "image": "busybox",
                                "resources": {"limits": {GPU_RESOURCE: str(gpus_per_pod)}},
                            }
                        ],
                    },
                },
            )
            names.append(name)
        return names

    # -- Cluster -----------------------------------------------------------------------
    def start(self) -> None:
        """Nothing runs in the background: the kubelet steps when the controller looks."""

    def close(self) -> None:
        """Nothing to release."""

    def wait_for_change(self, timeout: float) -> bool:
        # The kubelet advances on the clock, so step it before waiting on the store.
        self.kubelet.step()
        with self._lock:
            seen = self._seen_rv
        _, scanned = (
            self.store.changes_since("pods", seen, timeout=timeout)
            if seen >= 0
            else ([], self.store.resource_version)
        )
        with self._lock:
            self._seen_rv = scanned
        return scanned != seen

    def snapshot(self) -> Snapshot:
        self.kubelet.step()
        nodes, _ = self.store.list("nodes")
        namespaces, _ = self.store.list("namespaces", label_selector=TENANT_LABEL)
        pods, _ = self.store.list("pods", label_selector=REQUEST_LABEL)
        return Snapshot(
            nodes=[NodeView.parse(n) for n in nodes],
            namespaces=[NamespaceView.parse(n) for n in namespaces],
            pods=[PodView.parse(p) for p in pods],
        )

    def get_pod(self, namespace: str, name: str) -> PodView | None:
        try:
            return PodView.parse(self.store.get("pods", namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise _translate(exc) from exc

    def patch_pod(self, pod: PodView, ops: list[dict[str, Any]]) -> PodView:
        return PodView.parse(
            _call(
                lambda: self.store.patch(
                    "pods", pod.namespace, pod.name, "application/json-patch+json", ops
                )
            )
        )

    def evict_pod(self, pod: PodView, grace_s: int) -> None:
        _call(
            lambda: self.store.evict(
                pod.namespace,
                pod.name,
                {
                    "metadata": {"name": pod.name},
                    "deleteOptions": {
                        "gracePeriodSeconds": grace_s,
                        "preconditions": {"uid": pod.uid},
                    },
                },
            )
        )

    def delete_pod(self, pod: PodView, grace_s: int | None) -> None:
        _call(lambda: self.store.delete("pods", pod.namespace, pod.name, grace_s, {"uid": pod.uid}))

    def create_event(self, event: EventSpec) -> None:
        _call(
            lambda: self.store.create(
                "events", event.pod.namespace, event_body(event, self.clock())
            )
        )

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        _call(
            lambda: self.store.create(
                "namespaces", "", {"metadata": {"name": name, "labels": dict(labels)}}
            )
        )

    def ensure_quota(
        self, namespace: str, name: str, hard: Mapping[str, str], labels: Mapping[str, str]
    ) -> bool:
        try:
            current = self.store.get("resourcequotas", namespace, name)
        except ApiError as exc:
            if exc.code != 404:
                raise _translate(exc) from exc
            _call(
                lambda: self.store.create(
                    "resourcequotas",
                    namespace,
                    {
                        "metadata": {"name": name, "labels": dict(labels)},
                        "spec": {"hard": dict(hard)},
                    },
                )
            )
            return True
        if (current.get("spec") or {}).get("hard") == dict(hard):
            return False
        ops = [
            {
                "op": "replace",
                "path": "/metadata/resourceVersion",
                "value": current["metadata"]["resourceVersion"],
            },
            {"op": "add", "path": "/spec", "value": {"hard": dict(hard)}},
        ]
        _call(
            lambda: self.store.patch(
                "resourcequotas", namespace, name, "application/json-patch+json", ops
            )
        )
        return True

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            return lease_record(self.store.get("leases", namespace, name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise _translate(exc) from exc

    def create_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        self.ensure_namespace_exists(namespace)
        return lease_record(
            _call(lambda: self.store.create("leases", namespace, lease_body(name, record)))
        )

    def update_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        return lease_record(
            _call(lambda: self.store.update("leases", namespace, name, lease_body(name, record)))
        )

    def ensure_namespace_exists(self, name: str) -> None:
        """The simulated cluster has no installer; create the controller's own namespace."""
        try:
            self.store.create("namespaces", "", {"metadata": {"name": name}})
        except ApiError as exc:
            if exc.code != 409:
                raise
