"""The cluster adapter for a real API server, through the official ``kubernetes`` client.

Nodes, tenant namespaces and request pods are kept in watch caches (list, then watch from the
list's resourceVersion; relist on 410 Gone; re-watch after a dropped stream), so a reconcile
pass costs no reads. Writes go straight to the API and are retried with back-off on 5xx,
429 and timeouts; a 409 Conflict is handed to the reconciler, which re-reads and decides again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client

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
from k8s.objects import NamespaceView, NodeView, PodView, Raw
from k8s.settings import REQUEST_LABEL, TENANT_LABEL
from k8s.wire import event_body, lease_body, lease_record

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
_RETRY_CODES = frozenset({429, 500, 502, 503, 504})


def _error(exc: client.ApiException, *, eviction: bool = False) -> ClusterError:
    status = int(exc.status or 0)
    try:
        message = json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        message = str(exc.reason)
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status in (400, 403, 422) or (status == 429 and eviction):
        return Refused(message, status)
    return Unavailable(message, status)


class Backoff:
    """Exponential back-off with jitter: ``base``, doubled each try, capped at ``cap``."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, tries: int = 5) -> None:
        self.base, self.cap, self.tries = base, cap, tries

    def delays(self) -> list[float]:
        return [
            min(self.cap, self.base * 2**i) * (0.5 + random.random() / 2)
            for i in range(self.tries - 1)
        ]


class _Informer:
    """One list+watch cache in a thread. ``lister`` is a ``CoreV1Api.list_*`` method."""

    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        label_selector: str,
        changed: threading.Event,
        watch_timeout_s: int,
        request_timeout_s: float,
        backoff: Backoff,
    ) -> None:
        self.name = name
        self._lister = lister
        self._selector = label_selector
        self._changed = changed
        self._watch_timeout_s = watch_timeout_s
        self._request_timeout_s = request_timeout_s
        self._backoff = backoff
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Raw] = {}
        self._rv = ""
        self._stop = threading.Event()
        self._response: Any = None
        self.synced = threading.Event()
        self.relists = 0
        self.rewatches = 0
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except (AttributeError, OSError):
                response.close()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)

    def items(self) -> list[Raw]:
        with self._lock:
            return list(self._items.values())

    def upsert(self, raw: Raw) -> None:
        """Put a write's result into the cache at once (the watch event may lag)."""
        self._apply("MODIFIED", raw)

    def _key(self, raw: Raw) -> tuple[str, str]:
        meta = raw.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    def _apply(self, kind: str, raw: Raw) -> None:
        key = self._key(raw)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(key, None)
            else:
                old = self._items.get(key)
                if old is not None and _older(raw, old):
                    return  # an event older than a write we already cached
                self._items[key] = raw
        self._changed.set()

    def _run(self) -> None:
        failures = 0
        delays = self._backoff.delays() or [1.0]
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                need_list = self._watch()
                failures = 0
            except client.ApiException as exc:
                need_list = need_list or exc.status == 410
                failures += 1
                log.info("%s watch: API error %s; retrying", self.name, exc.status)
            except (*_TRANSPORT_ERRORS, ValueError) as exc:
                failures += 1
                self.rewatches += 1
                log.info("%s watch dropped (%s); resuming", self.name, type(exc).__name__)
            if failures:
                self._stop.wait(delays[min(failures, len(delays)) - 1])

    def _list(self) -> None:
        response = self._lister(
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=self._request_timeout_s,
        )
        body = json.loads(response.data)
        items = {self._key(i): i for i in body.get("items") or []}
        with self._lock:
            self._items = items
            self._rv = str(body.get("metadata", {}).get("resourceVersion", ""))
        self.relists += 1
        self.synced.set()
        self._changed.set()

    def _watch(self) -> bool:
        """Stream events until the server ends the watch; True if a relist is needed (410)."""
        response = self._lister(
            label_selector=self._selector,
            watch=True,
            resource_version=self._rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_s,
            _preload_content=False,
            _request_timeout=(self._request_timeout_s, self._watch_timeout_s + 10),
        )
        self._response = response
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and self._event(json.loads(line)):
                        return True
                if self._stop.is_set():
                    return False
        finally:
            self._response = None
            response.release_conn()
        return False

    def _event(self, event: dict[str, Any]) -> bool:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                log.info("%s watch expired (410 Gone); relisting", self.name)
                return True
            raise client.ApiException(status=obj.get("code", 500), reason=obj.get("message"))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = str(rv)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._apply(kind, obj)
        return False


def _older(new: Raw, old: Raw) -> bool:
    a = (new.get("metadata") or {}).get("resourceVersion", "")
    b = (old.get("metadata") or {}).get("resourceVersion", "")
    # resourceVersions are opaque; compare only when both are plain integers (etcd's are).
    return a.isdigit() and b.isdigit() and int(a) < int(b)


class KubeCluster:
    """:class:`~k8s.cluster.Cluster` on a real API server."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        request_timeout_s: float = 10.0,
        watch_timeout_s: int = 300,
        backoff: Backoff | None = None,
        sync_timeout_s: float = 30.0,
    ) -> None:
        # Our own retry loop is the only one: the pool must not retry writes behind our back.
        api_client.configuration.retries = False
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout_s
        self._backoff = backoff or Backoff()
        self._sync_timeout_s = sync_timeout_s
        self._changed = threading.Event()

        def informer(name: str, lister: Callable[..., Any], selector: str) -> _Informer:
            return _Informer(
                name,
                lister,
                selector,
                self._changed,
                watch_timeout_s,
                request_timeout_s,
                self._backoff,
            )

        self.nodes = informer("nodes", self.core.list_node, "")
        self.namespaces = informer("namespaces", self.core.list_namespace, TENANT_LABEL)
        self.pods = informer("pods", self.core.list_pod_for_all_namespaces, REQUEST_LABEL)
        self._informers = (self.nodes, self.namespaces, self.pods)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for i in self._informers:
            i.start()

    def close(self) -> None:
        for i in self._informers:
            i.stop()
        self.api_client.close()  # type: ignore[no-untyped-call]

    def wait_for_change(self, timeout: float) -> bool:
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    # -- reads -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        deadline = time.monotonic() + self._sync_timeout_s
        for i in self._informers:
            if not i.synced.wait(max(0.0, deadline - time.monotonic())):
                raise Unavailable(f"the {i.name} cache has not synced yet")
        return Snapshot(
            nodes=[NodeView.parse(n) for n in self.nodes.items()],
            namespaces=[NamespaceView.parse(n) for n in self.namespaces.items()],
            pods=[PodView.parse(p) for p in self.pods.items()],
        )

    def get_pod(self, namespace: str, name: str) -> PodView | None:
        try:
            raw = self._call(
                lambda: self._json(
                    self.core.read_namespaced_pod(
                        name, namespace, _preload_content=False, _request_timeout=self._timeout
                    )
                )
            )
        except NotFound:
            return None
        self.pods.upsert(raw)
        return PodView.parse(raw)

    # -- writes ------------------------------------------------------------------------
    def patch_pod(self, pod: PodView, ops: list[dict[str, Any]]) -> PodView:
        raw = self._call(
            lambda: self._json(
                self.core.patch_namespaced_pod(
                    pod.name,
                    pod.namespace,
                    ops,
                    _content_type="application/json-patch+json",
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            )
        )
        self.pods.upsert(raw)
        return PodView.parse(raw)

    def evict_pod(self, pod: PodView, grace_s: int) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": {"gracePeriodSeconds": grace_s, "preconditions": {"uid": pod.uid}},
        }
        self._call(
            lambda: self.core.create_namespaced_pod_eviction(
                pod.name,
                pod.namespace,
                _body(body),
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            eviction=True,
        )

    def delete_pod(self, pod: PodView, grace_s: int | None) -> None:
        body: dict[str, Any] = {"preconditions": {"uid": pod.uid}}
        if grace_s is not None:
            body["gracePeriodSeconds"] = grace_s
        self._call(
            lambda: self.core.delete_namespaced_pod(
                pod.name,
                pod.namespace,
                body=_body(body),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )

    def create_event(self, event: EventSpec) -> None:
        self._call(
            lambda: self.core.create_namespaced_event(
                event.pod.namespace,
                _body(event_body(event, datetime.now().astimezone())),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self._call(
            lambda: self.core.create_namespace(
                _body({"metadata": {"name": name, "labels": dict(labels)}}),
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )

    def ensure_quota(
        self, namespace: str, name: str, hard: Mapping[str, str], labels: Mapping[str, str]
    ) -> bool:
        try:
            current = self._call(
                lambda: self._json(
                    self.core.read_namespaced_resource_quota(
                        name, namespace, _preload_content=False, _request_timeout=self._timeout
                    )
                )
            )
        except NotFound:
            body = {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {"hard": dict(hard)},
            }
            self._call(
                lambda: self.core.create_namespaced_resource_quota(
                    namespace, _body(body), _preload_content=False, _request_timeout=self._timeout
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
        self._call(
            lambda: self.core.patch_namespaced_resource_quota(
                name,
                namespace,
                ops,
                _content_type="application/json-patch+json",
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        )
        return True

    def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        try:
            raw = self._call(
                lambda: self._json(
                    self.coordination.read_namespaced_lease(
                        name, namespace, _preload_content=False, _request_timeout=self._timeout
                    )
                )
            )
        except NotFound:
            return None
        return lease_record(raw)

    def create_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        # 409 AlreadyExists surfaces as Conflict: another replica created it first.
        raw = self._call(
            lambda: self._json(
                self.coordination.create_namespaced_lease(
                    namespace,
                    _body(lease_body(name, record)),
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            )
        )
        return lease_record(raw)

    def update_lease(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
        raw = self._call(
            lambda: self._json(
                self.coordination.replace_namespaced_lease(
                    name,
                    namespace,
                    _body(lease_body(name, record)),
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            )
        )
        return lease_record(raw)

    # -- plumbing ----------------------------------------------------------------------
    @staticmethod
    def _json(response: Any) -> Raw:
        data: Raw = json.loads(response.data)
        return data

    def _call(self, fn: Callable[[], T], *, eviction: bool = False) -> T:
        delays = self._backoff.delays()
        attempt = 0
        while True:
            try:
                return fn()
            except client.ApiException as exc:
                error = _error(exc, eviction=eviction)
                retry = int(exc.status or 0) in _RETRY_CODES and not isinstance(error, Refused)
            except _TRANSPORT_ERRORS as exc:
                error = Unavailable(f"{type(exc).__name__}: {exc}")
                retry = True
            if not retry or attempt >= len(delays):
                raise error
            time.sleep(delays[attempt])
            attempt += 1


def _body(raw: Raw) -> Any:
    """Send a plain JSON body: the client serialises dicts as they are, which keeps us free of
    its model classes (whose constructors differ between client versions)."""
    return raw
