"""Settings of the Kubernetes controller: names it uses and how it behaves."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

GATE = "gpupool.io/reservation"
REQUEST_LABEL = "gpupool.io/request"
TENANT_LABEL = "gpupool.io/tenant"
GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"
MANAGED_BY = "app.kubernetes.io/managed-by"


def default_identity() -> str:
    """This replica's name in the leader Lease: the pod's hostname plus a random suffix."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller enforces the plan.

    ``gpu_classes`` maps the node label ``nvidia.com/gpu.product`` to a gpupool GPU class
    (an unmapped product is used as the class name as is). ``tolerated_taints``: NoSchedule
    taint keys that GPU pods are expected to tolerate, so they do not take a node out of the
    pool (many clouds taint GPU nodes with ``nvidia.com/gpu``).
    """

    gpu_classes: Mapping[str, str] = field(default_factory=dict)
    unknown_gpu_class: str = "unknown"
    tolerated_taints: tuple[str, ...] = (GPU_RESOURCE,)
    eviction_grace_s: int = 30
    force_delete_after_s: int = 60  # after the eviction, delete what is still there
    create_namespaces: bool = False
    namespace_template: str = "{tenant}"
    manage_quotas: bool = False
    quota_name: str = "gpupool-gpus"
    leader_election: bool = True
    lease_namespace: str = "gpupool-system"
    lease_name: str = "gpupool-controller"
    lease_duration_s: float = 15.0
    renew_interval_s: float = 5.0
    identity: str = field(default_factory=default_identity)
    resync_s: float = 10.0  # longest wait between passes when nothing happens
    full_resync_s: float = 300.0  # forget memoised writes (quotas, events) this often
    write_workers: int = 8  # pod writes in flight at once
    component: str = "gpupool-controller"

    def __post_init__(self) -> None:
        checks = {
            "eviction_grace_s": self.eviction_grace_s >= 0,
            "force_delete_after_s": self.force_delete_after_s >= 0,
            "lease_duration_s": self.lease_duration_s > 0,
            "renew_interval_s": 0 < self.renew_interval_s < self.lease_duration_s,
            "resync_s": self.resync_s > 0,
            "write_workers": self.write_workers >= 1,
            "namespace_template": "{tenant}" in self.namespace_template,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"ControllerSettings.{name}: invalid value {getattr(self, name)!r}"
                )

    def gpu_class(self, product: str | None) -> str:
        if not product:
            return self.unknown_gpu_class
        return self.gpu_classes.get(product, product)


ENV_PREFIX = "GPUPOOL_K8S_"


def settings_from_env(environ: Mapping[str, str], **overrides: object) -> ControllerSettings:
    """Controller settings from ``GPUPOOL_K8S_*`` variables (the ConfigMap of the manifests):
    ``EVICTION_GRACE_S``, ``FORCE_DELETE_AFTER_S``, ``CREATE_NAMESPACES``, ``NAMESPACE_TEMPLATE``,
    ``MANAGE_QUOTAS``, ``LEADER_ELECTION``, ``LEASE_NAMESPACE``, ``GPU_CLASSES`` (JSON object),
    ``TOLERATED_TAINTS`` (comma-separated), ``IDENTITY`` (default: ``POD_NAME``). A bad value
    raises ``ValueError`` naming the variable."""
    import json

    values: dict[str, object] = {}
    kinds: dict[str, type] = {
        "EVICTION_GRACE_S": int,
        "FORCE_DELETE_AFTER_S": int,
        "CREATE_NAMESPACES": bool,
        "NAMESPACE_TEMPLATE": str,
        "MANAGE_QUOTAS": bool,
        "LEADER_ELECTION": bool,
        "LEASE_NAMESPACE": str,
        "RESYNC_S": float,
        "WRITE_WORKERS": int,
    }
    for key, kind in kinds.items():
        raw = environ.get(ENV_PREFIX + key)
        if raw is None:
            continue
        try:
            if kind is bool:
                if raw.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                values[key.lower()] = raw.strip().lower() in ("true", "1", "yes")
            else:
                values[key.lower()] = kind(raw)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}{key}: invalid value {raw!r}: {exc}") from exc
    classes = environ.get(ENV_PREFIX + "GPU_CLASSES")
    if classes:
        try:
            mapping = json.loads(classes)
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}GPU_CLASSES: not JSON: {exc}") from exc
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ValueError(f"{ENV_PREFIX}GPU_CLASSES: must be a JSON object of strings")
        values["gpu_classes"] = mapping
    taints = environ.get(ENV_PREFIX + "TOLERATED_TAINTS")
    if taints is not None:
        values["tolerated_taints"] = tuple(t.strip() for t in taints.split(",") if t.strip())
    identity = environ.get(ENV_PREFIX + "IDENTITY") or environ.get("POD_NAME")
    if identity:
        values["identity"] = identity
    values.update(overrides)
    return ControllerSettings(**values)  # type: ignore[arg-type]
