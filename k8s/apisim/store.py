"""An in-memory Kubernetes object store with the API server's semantics.

It holds nodes, namespaces, pods, events, resource quotas and leases; gives every write a new
``resourceVersion`` from one counter (like etcd); refuses stale writes with 409 Conflict and
invalid pod changes with 422 (see :mod:`k8s.apisim.rules`); applies the three patch formats;
deletes pods gracefully; serves the Eviction subresource; keeps a bounded history of changes
so that watches can resume from a ``resourceVersion`` and get 410 Gone once it is compacted
away; and enforces GPU ResourceQuotas at pod creation, counting gated pods as quota admission
does. It backs both the simulated cluster and the loopback fake API server.
"""

from __future__ import annotations

import builtins
import copy
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

from k8s.apisim import rules
from k8s.apisim.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    not_found,
)
from k8s.apisim.patch import apply_patch
from k8s.apisim.selectors import field_matcher, label_matcher
from k8s.port import Clock, utc_now

Obj = dict[str, Any]


_ATOMS = (str, int, float, bool, type(None))


@overload
def clone(obj: Obj) -> Obj: ...
@overload
def clone(obj: Any) -> Any: ...


def clone(obj: Any) -> Any:
    """A deep copy of a JSON-like tree (dicts, lists, scalars); several times faster than
    ``copy.deepcopy``, which dominated a simulator's profile. Anything else is deep-copied."""
    if isinstance(obj, dict):
        return {k: v if type(v) in _ATOMS else clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [v if type(v) in _ATOMS else clone(v) for v in obj]
    if type(obj) in _ATOMS:
        return obj
    return copy.deepcopy(obj)


@dataclass(frozen=True)
class Kind:
    """One resource type the store serves."""

    resource: str
    kind: str
    api_version: str
    namespaced: bool


KINDS: dict[str, Kind] = {
    k.resource: k
    for k in (
        Kind("nodes", "Node", "v1", False),
        Kind("namespaces", "Namespace", "v1", False),
        Kind("pods", "Pod", "v1", True),
        Kind("events", "Event", "v1", True),
        Kind("resourcequotas", "ResourceQuota", "v1", True),
        Kind("leases", "Lease", "coordination.k8s.io/v1", True),
    )
}

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Change:
    """One entry of the change history: the object after (and before) a write."""

    rv: int
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def pod_gpus(pod: Obj, resource: str) -> int:
    """GPUs a pod requests: the larger of its containers' sum and its largest init container."""
    spec = pod.get("spec", {})

    def amount(c: Obj) -> int:
        req = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        lim = ((c.get("resources") or {}).get("limits") or {}).get(resource)
        value = req if req is not None else lim
        return int(rules.quantity(value)) if value is not None else 0

    total = sum(amount(c) for c in spec.get("containers") or [])
    init = max((amount(c) for c in spec.get("initContainers") or []), default=0)
    return max(total, init)


class Store:
    """Objects by resource and ``(namespace, name)``, guarded by one condition variable."""

    def __init__(
        self,
        clock: Clock = utc_now,
        *,
        history: int = 10_000,
        extended_resources: tuple[str, ...] = ("nvidia.com/gpu",),
    ) -> None:
        self.clock = clock
        self.extended_resources = extended_resources
        self._cond = threading.Condition()
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in KINDS}
        self._rv = 0
        self._log: deque[Change] = deque(maxlen=history)
        self._oldest = 0  # watches from a resourceVersion below this get 410 Gone

    # -- reads -------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self._cond:
            obj = self._objects[resource].get((namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return clone(obj)

    def count(self, resource: str, predicate: Callable[[Obj], bool]) -> tuple[int, int]:
        """(objects matching ``predicate``, all objects) of a resource, read in place without
        copies: cheap enough for a benchmark to poll. ``predicate`` must not modify."""
        with self._cond:
            objects = self._objects[resource].values()
            return sum(1 for o in objects if predicate(o)), len(objects)

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        labels, fields = label_matcher(label_selector), field_matcher(field_selector)
        with self._cond:
            items = [
                clone(o)
                for (ns, _), o in sorted(self._objects[resource].items())
                if (namespace is None or ns == namespace)
                and labels(o["metadata"].get("labels") or {})
                and fields(o)
            ]
            return items, str(self._rv)

    # -- writes ------------------------------------------------------------------------
    def create(self, resource: str, namespace: str, body: Obj) -> Obj:
        kind = KINDS[resource]
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    kind.kind,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta["name"]
        if kind.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        rules.validate_name(kind.kind, name, label=resource == "namespaces")
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        with self._cond:
            if kind.namespaced and ("", namespace) not in self._objects["namespaces"]:
                raise not_found("namespaces", namespace)
            if (namespace, name) in self._objects[resource]:
                raise already_exists(resource, name)
            if resource == "pods":
                self._prepare_pod(obj)
                self._admit_quota(namespace, obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = timestamp(self.clock())
            meta.pop("deletionTimestamp", None)
            meta.setdefault("generation", 1)
            return self._commit(resource, "ADDED", obj, None)

    def update(self, resource: str, namespace: str, name: str, body: Obj) -> Obj:
        """PUT: replace the object; ``metadata.resourceVersion`` must be the current one."""
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if not rv:
            raise invalid(
                KINDS[resource].kind,
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        with self._cond:
            return self._replace(resource, namespace, name, clone(body))

    def patch(self, resource: str, namespace: str, name: str, patch_type: str, patch: Any) -> Obj:
        with self._cond:
            current = self._current(resource, namespace, name)
            patched = apply_patch(current, patch_type, patch)
            return self._replace(resource, namespace, name, patched)

    def update_status(
        self, resource: str, namespace: str, name: str, mutate: Callable[[Obj], None]
    ) -> Obj:
        """Change an object's status as its owner (kubelet, node controller) would, through
        the status subresource: only ``status`` may change, with no conflict check."""
        with self._cond:
            current = self._current(resource, namespace, name)
            new = clone(current)
            mutate(new)
            current_copy = clone(current)
            current_copy["status"] = new.get("status", {})
            if resource == "pods" and new["spec"].get("nodeName") != current["spec"].get(
                "nodeName"
            ):
                # Binding: the scheduler's pods/binding subresource sets nodeName.
                current_copy["spec"]["nodeName"] = new["spec"]["nodeName"]
            return self._commit(resource, "MODIFIED", current_copy, current)

    def delete(
        self,
        resource: str,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
        preconditions: Obj | None = None,
    ) -> Obj:
        with self._cond:
            current = self._current(resource, namespace, name)
            if preconditions:
                uid, rv = preconditions.get("uid"), preconditions.get("resourceVersion")
                if (uid and uid != current["metadata"]["uid"]) or (
                    rv and rv != current["metadata"]["resourceVersion"]
                ):
                    raise conflict(resource, name)
            if resource != "pods":
                return self._remove(resource, current)
            return self._delete_pod(current, grace_seconds)

    def evict(self, namespace: str, name: str, body: Obj) -> Obj:
        """The ``pods/eviction`` subresource: a graceful delete on behalf of the caller."""
        options = body.get("deleteOptions") or {}
        if body.get("metadata", {}).get("name", name) != name:
            raise bad_request("name in URL does not match name in Eviction object")
        self.delete(
            "pods", namespace, name, options.get("gracePeriodSeconds"), options.get("preconditions")
        )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    def remove(self, resource: str, namespace: str, name: str) -> None:
        """Drop an object for good (a kubelet confirming a pod's termination)."""
        with self._cond:
            current = self._objects[resource].get((namespace, name))
            if current is not None:
                self._remove(resource, current)

    # -- watch -------------------------------------------------------------------------
    def changes_since(
        self,
        resource: str,
        since: int,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout: float = 0.0,
    ) -> tuple[builtins.list[tuple[str, Obj, int]], int]:
        """Watch events ``(type, object, rv)`` after ``since``, waiting up to ``timeout`` for one,
        and the resourceVersion they cover up to (resume from it).

        An object that starts or stops matching the selector is reported as ADDED or DELETED,
        as the API server's watch cache does. Raises 410 Gone when ``since`` is older than the
        retained history.
        """
        labels, fields = label_matcher(label_selector), field_matcher(field_selector)

        def matches(o: Obj | None) -> bool:
            return (
                o is not None
                and (namespace is None or o["metadata"].get("namespace") == namespace)
                and labels(o["metadata"].get("labels") or {})
                and fields(o)
            )

        with self._cond:
            if since < self._oldest:
                raise gone(f"too old resource version: {since} ({self._oldest})")
            if self._rv <= since and timeout > 0:
                self._cond.wait_for(lambda: self._rv > since, timeout)
            if since < self._oldest:
                raise gone(f"too old resource version: {since} ({self._oldest})")
            out: list[tuple[str, Obj, int]] = []
            for change in self._log:
                if change.rv <= since or change.resource != resource:
                    continue
                now_in, was_in = matches(change.obj), matches(change.prev)
                if change.type == "DELETED":
                    kind = "DELETED" if was_in else ""
                elif now_in and was_in:
                    kind = "MODIFIED"
                elif now_in:
                    kind = "ADDED"
                elif was_in:
                    kind = "DELETED"
                else:
                    kind = ""
                if kind:
                    out.append((kind, clone(change.obj), change.rv))
            return out, self._rv

    def compact(self) -> None:
        """Forget the change history, so that any watch resuming from before now gets 410."""
        with self._cond:
            self._log.clear()
            self._oldest = self._rv

    # -- internals (call with the lock held) ---------------------------------------------
    def _current(self, resource: str, namespace: str, name: str) -> Obj:
        key = (namespace if KINDS[resource].namespaced else "", name)
        obj = self._objects[resource].get(key)
        if obj is None:
            raise not_found(resource, name)
        return obj

    def _commit(self, resource: str, kind: str, obj: Obj, prev: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        stored = clone(obj)
        key = _key(stored)
        if kind == "DELETED":
            self._objects[resource].pop(key, None)
        else:
            self._objects[resource][key] = stored
        if len(self._log) == self._log.maxlen:
            self._oldest = self._log[0].rv
        self._log.append(Change(self._rv, resource, kind, stored, prev))
        self._cond.notify_all()
        return clone(stored)

    def _replace(self, resource: str, namespace: str, name: str, new: Obj) -> Obj:
        current = self._current(resource, namespace, name)
        meta = new.setdefault("metadata", {})
        rv = meta.get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        if resource == "pods":
            # The status subresource owns status; an update of the pod keeps it.
            new["status"] = clone(current.get("status", {}))
            rules.validate_pod_update(current, new)
        for field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if field in current["metadata"]:
                meta[field] = current["metadata"][field]
        meta["name"] = name
        if KINDS[resource].namespaced:
            meta["namespace"] = namespace
        new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
        if _without_rv(new) == _without_rv(current):
            return clone(current)  # a no-op write does not bump the version
        return self._commit(resource, "MODIFIED", new, current)

    def _remove(self, resource: str, current: Obj) -> Obj:
        gone_obj = clone(current)
        return self._commit(resource, "DELETED", gone_obj, current)

    def _delete_pod(self, pod: Obj, grace_seconds: int | None) -> Obj:
        spec, status = pod.get("spec", {}), pod.get("status", {})
        grace = grace_seconds
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        # A pod that never reached a node, or has finished, goes at once: no kubelet has to
        # stop anything.
        if grace <= 0 or not spec.get("nodeName") or status.get("phase") in TERMINAL_PHASES:
            return self._remove("pods", pod)
        meta = pod["metadata"]
        deadline = self.clock() + timedelta(seconds=grace)
        if "deletionTimestamp" in meta and parse_timestamp(meta["deletionTimestamp"]) <= deadline:
            return clone(pod)
        new = clone(pod)
        new["metadata"]["deletionTimestamp"] = timestamp(deadline)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        return self._commit("pods", "MODIFIED", new, pod)

    def _prepare_pod(self, pod: Obj) -> None:
        rules.validate_pod_create(pod, self.extended_resources)
        spec = pod["spec"]
        spec.setdefault("terminationGracePeriodSeconds", 30)
        gated = bool(spec.get("schedulingGates"))
        pod["status"] = {"phase": "Pending"}
        if gated:
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "SchedulingGated",
                    "message": "Scheduling is blocked due to non-empty scheduling gates",
                }
            ]

    def _admit_quota(self, namespace: str, pod: Obj) -> None:
        # Quota admission counts a pod when it is created, gated or not.
        for resource in self.extended_resources:
            asked = pod_gpus(pod, resource)
            if not asked:
                continue
            key = f"requests.{resource}"
            used = sum(
                pod_gpus(p, resource)
                for (ns, _), p in self._objects["pods"].items()
                if ns == namespace and p.get("status", {}).get("phase") not in TERMINAL_PHASES
            )
            for (ns, qname), quota in self._objects["resourcequotas"].items():
                hard = (quota.get("spec") or {}).get("hard") or {}
                if ns != namespace or key not in hard:
                    continue
                limit = int(rules.quantity(hard[key]))
                if used + asked > limit:
                    raise ApiError(
                        403,
                        "Forbidden",
                        f'pods "{pod["metadata"]["name"]}" is forbidden: exceeded quota: {qname}'
                        f", requested: {key}={asked}, used: {key}={used}, limited: {key}={limit}",
                        kind="pods",
                        name=pod["metadata"]["name"],
                    )


def _without_rv(obj: Obj) -> Obj:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return out
