"""From a pod UID to namespace, pod, container and gpupool request, through the API server.

:class:`PodDirectory` is the seam. :class:`KubernetesPodDirectory` lists the pods bound to
this node with the official ``kubernetes`` client (``fieldSelector=spec.nodeName=<node>``),
caches them, refreshes the cache on a timer and on a miss (a pod that started since the last
list), and keeps serving the last good list when the API server is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metrics.agent.config import AgentSetupError

log = logging.getLogger(__name__)

REQUEST_LABEL = "gpupool.io/request"
# A static pod's cgroup carries the kubelet's config hash, which its mirror pod repeats here.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A pod on this node as the agent labels its GPU use."""

    uid: str
    namespace: str
    name: str
    request_id: int | None = None
    container_names: tuple[str, ...] = ()
    # Runtime container ID (no ``containerd://`` prefix) -> container name.
    containers: Mapping[str, str] = field(default_factory=dict)

    def container_name(self, container_id: str | None) -> str:
        """The container's name; with one container the choice is clear even without an ID."""
        if container_id is not None and container_id in self.containers:
            return self.containers[container_id]
        if len(self.container_names) == 1:
            return self.container_names[0]
        return ""


class PodDirectory(Protocol):
    """Looks pods up by UID (the dashed UID, or a static pod's config hash).

    ``failures`` counts lookups of the directory itself that failed (API server down).
    """

    failures: int

    def lookup(self, pod_uid: str) -> PodInfo | None: ...


class NoPods:
    """The directory used without Kubernetes: no process belongs to a known pod."""

    failures = 0

    def lookup(self, pod_uid: str) -> PodInfo | None:
        return None


def parse_request_id(value: str | None) -> int | None:
    """The request id in a ``gpupool.io/request`` label value; ``None`` if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else None


def _runtime_id(container_id: str | None) -> str | None:
    """``containerd://abc…`` -> ``abc…`` (the ID the cgroup path carries)."""
    if not container_id:
        return None
    return container_id.split("://", 1)[-1]


def pod_info_from(pod: Any) -> PodInfo:
    """A :class:`PodInfo` from a ``kubernetes.client.V1Pod``."""
    meta = pod.metadata
    labels: Mapping[str, str] = meta.labels or {}
    status = pod.status
    statuses = [
        *((status.container_statuses or []) if status else []),
        *((status.init_container_statuses or []) if status else []),
    ]
    containers = {
        runtime_id: cs.name
        for cs in statuses
        if (runtime_id := _runtime_id(cs.container_id)) is not None
    }
    spec_names = tuple(c.name for c in (pod.spec.containers or [])) if pod.spec else ()
    raw_request = labels.get(REQUEST_LABEL)
    request_id = parse_request_id(raw_request)
    if raw_request is not None and request_id is None:
        log.warning(
            "pod %s/%s: label %s=%r is not a request id (a whole number); ignored",
            meta.namespace,
            meta.name,
            REQUEST_LABEL,
            raw_request,
        )
    return PodInfo(
        uid=str(meta.uid),
        namespace=str(meta.namespace),
        name=str(meta.name),
        request_id=request_id,
        container_names=spec_names,
        containers=containers,
    )


class KubernetesPodDirectory:
    """Pods of one node from the API server, cached; refreshed every ``refresh_s`` or on a miss.

    A miss triggers at most one list per ``miss_refresh_s``, so a host process that is not in
    any pod (and never will be found) cannot turn every sample into an API call.
    """

    def __init__(
        self,
        core_api: Any,
        node_name: str,
        refresh_s: float = 30.0,
        miss_refresh_s: float = 5.0,
        request_timeout_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core_api
        self._node = node_name
        self._refresh_s = refresh_s
        self._miss_refresh_s = miss_refresh_s
        self._timeout = request_timeout_s
        self._monotonic = monotonic
        self._by_uid: dict[str, PodInfo] = {}
        self._listed_at: float | None = None
        self._tried_at: float | None = None
        self._last_error: str | None = None
        self.failures = 0
        self.lists = 0

    def lookup(self, pod_uid: str) -> PodInfo | None:
        now = self._monotonic()
        if self._listed_at is None or now - self._listed_at >= self._refresh_s:
            self._refresh(now)
        found = self._by_uid.get(pod_uid)
        if found is None:
            # Perhaps a pod that started since the last list.
            self._refresh(now)
            found = self._by_uid.get(pod_uid)
        return found

    def _refresh(self, now: float) -> None:
        if self._tried_at is not None and now - self._tried_at < self._miss_refresh_s:
            return  # Listed (or failed to) a moment ago: do not hammer the API server.
        self._tried_at = now
        try:
            pods = self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self._node}",
                # (connect, read): a blackholed API server costs seconds, not minutes.
                _request_timeout=(min(3.0, self._timeout), self._timeout),
            )
        except Exception as exc:  # Whatever failed, the last good list stays in use.
            self.failures += 1
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if error != self._last_error:
                log.warning(
                    "listing pods of node %s failed (%s); keeping the last list", self._node, error
                )
            self._last_error = error
            return
        by_uid: dict[str, PodInfo] = {}
        for pod in pods.items or []:
            info = pod_info_from(pod)
            by_uid[info.uid] = info
            mirror = (pod.metadata.annotations or {}).get(MIRROR_ANNOTATION)
            if mirror:
                by_uid[mirror] = info
        self._by_uid = by_uid
        self._listed_at = now
        self.lists += 1
        if self._last_error is not None:
            log.info("listing pods of node %s works again", self._node)
        self._last_error = None


def kubernetes_core_api(kubeconfig: Path | None = None) -> Any:
    """A ``CoreV1Api``: in-cluster credentials in a pod, else ``kubeconfig`` or the default one."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            except config.ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
    except (config.ConfigException, OSError) as exc:
        raise AgentSetupError(
            f"no Kubernetes credentials ({exc}): run in a pod with a service account, "
            "pass --kubeconfig, or use --no-kubernetes to skip pod lookup"
        ) from exc
    # The list runs on the sampling thread: no urllib3 retry ladder behind a dead API
    # server; the directory tries again on its own schedule.
    configuration.retries = 0
    return client.CoreV1Api(client.ApiClient(configuration))
