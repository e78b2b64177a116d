"""Read-only views of the Kubernetes objects the controller reasons about.

Both cluster adapters hand the controller raw API dictionaries (the JSON the API server
sends); these views parse the few fields that matter, once, so reconcilers never dig in raw
JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from k8s.apisim.rules import quantity
from k8s.settings import GATE, GPU_RESOURCE, HOSTNAME_LABEL, PRODUCT_LABEL, REQUEST_LABEL

Raw = dict[str, Any]


def _meta(raw: Raw) -> Raw:
    return raw.get("metadata") or {}


def _gpus(value: Any) -> int:
    try:
        return int(quantity(value)) if value is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    gpus: int
    unschedulable: bool
    ready: bool
    no_schedule_taints: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Raw, resource: str = GPU_RESOURCE) -> NodeView:
        spec, status = raw.get("spec") or {}, raw.get("status") or {}
        conditions = status.get("conditions") or []
        return cls(
            name=_meta(raw)["name"],
            labels=dict(_meta(raw).get("labels") or {}),
            gpus=_gpus((status.get("allocatable") or {}).get(resource)),
            unschedulable=bool(spec.get("unschedulable")),
            ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
            no_schedule_taints=tuple(
                str(t.get("key", ""))
                for t in spec.get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute")
            ),
        )

    @property
    def product(self) -> str | None:
        return self.labels.get(PRODUCT_LABEL)


@dataclass(frozen=True)
class NamespaceView:
    name: str
    labels: Mapping[str, str]

    @classmethod
    def parse(cls, raw: Raw) -> NamespaceView:
        return cls(name=_meta(raw)["name"], labels=dict(_meta(raw).get("labels") or {}))


@dataclass(frozen=True)
class PodView:
    """A pod that carries the request label (or the gate)."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: Mapping[str, str]
    gates: tuple[str, ...]
    phase: str
    node_name: str
    gpus: int
    terminating: bool
    reason: str
    message: str
    affinity: Raw | None
    raw: Raw

    @classmethod
    def parse(cls, raw: Raw, resource: str = GPU_RESOURCE) -> PodView:
        meta, spec, status = _meta(raw), raw.get("spec") or {}, raw.get("status") or {}

        def amount(c: Raw) -> int:
            res = c.get("resources") or {}
            value = (res.get("requests") or {}).get(resource)
            return _gpus(value if value is not None else (res.get("limits") or {}).get(resource))

        total = sum(amount(c) for c in spec.get("containers") or [])
        init = max((amount(c) for c in spec.get("initContainers") or []), default=0)
        reason, message = str(status.get("reason") or ""), str(status.get("message") or "")
        if not reason:
            for cs in status.get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated") or {}
                if term and term.get("exitCode", 0) != 0:
                    reason = str(term.get("reason") or "Error")
                    message = message or (
                        f"container {cs.get('name')} exited with code {term.get('exitCode')}"
                    )
                    break
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta["name"],
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
            labels=dict(meta.get("labels") or {}),
            gates=tuple(str(g.get("name")) for g in spec.get("schedulingGates") or []),
            phase=str(status.get("phase") or "Pending"),
            node_name=str(spec.get("nodeName") or ""),
            gpus=max(total, init),
            terminating="deletionTimestamp" in meta,
            reason=reason,
            message=message,
            affinity=spec.get("affinity"),
            raw=raw,
        )

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def gated(self) -> bool:
        return GATE in self.gates

    @property
    def request_label(self) -> str | None:
        return self.labels.get(REQUEST_LABEL)

    @property
    def request_id(self) -> int | None:
        """The request id from the label, ``None`` if missing or not a decimal number."""
        value = self.request_label
        if value is None or not value.isdigit() or len(value) > 18:
            return None
        return int(value)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def holds_gpus(self) -> bool:
        """Ungated and not finished: the pod has, or is about to get, its GPUs."""
        return not self.gated and not self.finished

    def required_terms(self) -> list[Raw]:
        node_affinity = (self.affinity or {}).get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        return list(required.get("nodeSelectorTerms") or [])

    def pinned_node(self) -> str | None:
        """The one node this pod can run on: where it is bound, else the single hostname its
        required affinity allows (every term must pin the same one)."""
        if self.node_name:
            return self.node_name
        terms = self.required_terms()
        pinned: set[str] = set()
        for term in terms:
            hosts = [
                e.get("values") or []
                for e in term.get("matchExpressions") or []
                if e.get("key") == HOSTNAME_LABEL and e.get("operator") == "In"
            ]
            if not hosts:
                return None
            allowed = set(hosts[0]).intersection(*hosts[1:])
            if len(allowed) != 1:
                return None
            pinned |= allowed
        return pinned.pop() if len(pinned) == 1 else None
