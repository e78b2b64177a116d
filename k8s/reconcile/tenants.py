"""Tenants and namespaces, matched by the namespace label ``gpupool.io/tenant``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from k8s.objects import NamespaceView
from k8s.settings import TENANT_LABEL, ControllerSettings

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def tenant_of_namespace(namespaces: Sequence[NamespaceView]) -> dict[str, str]:
    """Namespace name -> tenant name, for namespaces that carry the tenant label."""
    return {ns.name: ns.labels[TENANT_LABEL] for ns in namespaces if ns.labels.get(TENANT_LABEL)}


def namespace_name(tenant: str, settings: ControllerSettings) -> str | None:
    """The namespace to create for ``tenant``, or ``None`` if the template gives no valid
    Kubernetes name (lower-case letters, digits and '-', at most 63)."""
    name = settings.namespace_template.format(tenant=tenant.lower().replace("_", "-"))
    return name if _DNS_LABEL.match(name) else None


def namespaces_to_create(
    tenants: Mapping[str, bool], namespaces: Sequence[NamespaceView], settings: ControllerSettings
) -> dict[str, str]:
    """Namespace name -> tenant, for active tenants that have no namespace yet."""
    if not settings.create_namespaces:
        return {}
    have = set(tenant_of_namespace(namespaces).values())
    wanted: dict[str, str] = {}
    for tenant, active in sorted(tenants.items()):
        if not active or tenant in have:
            continue
        name = namespace_name(tenant, settings)
        if name is not None:
            wanted[name] = tenant
    return wanted
