"""What the API server refuses, for the writes a GPU controller makes.

These mirror the rules of Kubernetes' pod validation (``ValidatePodCreate`` and
``ValidatePodUpdate``) for the fields that matter here: scheduling gates may be set only at
creation and afterwards only removed; while a pod is still gated its ``nodeSelector`` may only
gain entries and its required node affinity may only be narrowed (matchExpressions appended
to each existing term); every other spec change except images, tolerations added and
``activeDeadlineSeconds`` is forbidden; a pod may not be created bound to a node while gated;
an extended resource such as ``nvidia.com/gpu`` needs equal requests and limits. Messages
follow the API server's wording so that error handling can be tested against them.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from k8s.apisim.errors import invalid

Cause = tuple[str, str, str]  # field path, cause type, message

_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

ALLOWED_POD_UPDATES = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _gates(spec: dict[str, Any]) -> list[str]:
    return [str(g.get("name", "")) for g in spec.get("schedulingGates") or []]


def _semantic(value: Any) -> Any:
    """Empty lists, maps and nulls compare equal, as the API server's semantic equality has it."""
    if isinstance(value, dict):
        return {k: _semantic(v) for k, v in value.items() if _semantic(v) is not None}
    if isinstance(value, list):
        return [_semantic(v) for v in value] or None
    return value


def quantity(value: Any) -> Decimal:
    """A resource quantity as a number (``"2"``, ``2``, ``"500m"``, ``"1k"``)."""
    text = str(value).strip()
    suffixes: dict[str, Decimal] = {
        "m": Decimal("0.001"),
        "k": Decimal(1000),
        "M": Decimal(10**6),
        "Ki": Decimal(1024),
    }
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            try:
                return Decimal(text[: -len(suffix)]) * factor
            except InvalidOperation:
                break
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"quantities must match the regular expression: {text!r}") from exc


def validate_name(kind: str, name: str, *, label: bool) -> None:
    pattern = _DNS_LABEL if label else _DNS_SUBDOMAIN
    if not name or not pattern.match(name):
        raise invalid(
            kind,
            name,
            [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f"Invalid value: {name!r}: a lowercase "
                    "RFC 1123 name must consist of lower case alphanumeric characters or '-'",
                )
            ],
        )


def validate_pod_create(pod: dict[str, Any], extended: tuple[str, ...]) -> None:
    """Refuse a new pod the way the API server would; defaults GPU requests from limits."""
    name = pod["metadata"]["name"]
    spec = pod.setdefault("spec", {})
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(("spec.containers", "FieldValueRequired", "Required value"))
    gates = _gates(spec)
    seen: set[str] = set()
    for i, gate in enumerate(gates):
        path = f"spec.schedulingGates[{i}].name"
        if not _QUALIFIED.match(gate):
            causes.append(
                (
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: {gate!r}: name part "
                    "must consist of alphanumeric characters, '-', '_' or '.'",
                )
            )
        if gate in seen:
            causes.append((path, "FieldValueDuplicate", f"Duplicate value: {gate!r}"))
        seen.add(gate)
    if gates and spec.get("nodeName"):
        causes.append(
            (
                "spec.nodeName",
                "FieldValueForbidden",
                "Forbidden: cannot be set until all schedulingGates have been cleared",
            )
        )
    for field in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(field) or []):
            if not c.get("name"):
                causes.append((f"spec.{field}[{i}].name", "FieldValueRequired", "Required value"))
            causes.extend(_extended_resources(c, f"spec.{field}[{i}].resources", extended))
    if causes:
        raise invalid("Pod", name, causes)


def _extended_resources(
    container: dict[str, Any], path: str, extended: tuple[str, ...]
) -> list[Cause]:
    resources = container.setdefault("resources", {})
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    causes: list[Cause] = []
    for resource in extended:
        if resource in limits and resource not in requests:
            resources.setdefault("requests", {})[resource] = limits[resource]
            requests = resources["requests"]
        if resource not in requests:
            continue
        try:
            amount = quantity(requests[resource])
        except ValueError as exc:
            causes.append((f"{path}.requests[{resource}]", "FieldValueInvalid", str(exc)))
            continue
        if amount != amount.to_integral_value():
            causes.append(
                (
                    f"{path}.requests[{resource}]",
                    "FieldValueInvalid",
                    f"Invalid value: {requests[resource]!r}: must be an integer",
                )
            )
        if resource not in limits:
            causes.append(
                (
                    f"{path}.limits",
                    "FieldValueRequired",
                    "Required value: Limit must be set for non overcommitable resources",
                )
            )
        elif quantity(limits[resource]) != amount:
            causes.append(
                (
                    f"{path}.requests",
                    "FieldValueInvalid",
                    f"Invalid value: "
                    f"{requests[resource]!r}: must be equal to {resource} limit of "
                    f"{limits[resource]}",
                )
            )
    return causes


def validate_pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse a pod update the way ``ValidatePodUpdate`` does (status is kept from ``old``
    by the caller, as the API server's update strategy does)."""
    name = old["metadata"]["name"]
    causes: list[Cause] = []
    causes.extend(_metadata_immutable(old, new))
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_gates, new_gates = _gates(old_spec), _gates(new_spec)
    for i, gate in enumerate(new_gates):
        if gate not in old_gates:
            causes.append(
                (
                    f"spec.schedulingGates[{i}].name",
                    "FieldValueForbidden",
                    f"Forbidden: only deletion is allowed, but found new scheduling gate '{gate}'",
                )
            )
    munged = copy.deepcopy(new_spec)
    munged["schedulingGates"] = old_spec.get("schedulingGates")
    for field in ("containers", "initContainers"):
        old_list, new_list = old_spec.get(field) or [], munged.get(field) or []
        if len(old_list) != len(new_list):
            causes.append(
                (
                    f"spec.{field}",
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not add or remove containers",
                )
            )
            continue
        for o, n in zip(old_list, new_list, strict=True):
            if not str(n.get("image", "")).strip():
                causes.append((f"spec.{field}.image", "FieldValueRequired", "Required value"))
            n["image"] = o.get("image")
    causes.extend(_tolerations(old_spec, new_spec))
    munged["tolerations"] = old_spec.get("tolerations")
    munged["activeDeadlineSeconds"] = old_spec.get("activeDeadlineSeconds")
    if old_gates:
        causes.extend(_node_selector(old_spec, new_spec))
        munged["nodeSelector"] = old_spec.get("nodeSelector")
        causes.extend(_node_affinity(old_spec, new_spec))
        affinity = munged.get("affinity") or {}
        affinity = {k: v for k, v in affinity.items() if k != "nodeAffinity"}
        old_node_affinity = (old_spec.get("affinity") or {}).get("nodeAffinity")
        if old_node_affinity is not None:
            affinity["nodeAffinity"] = old_node_affinity
        munged["affinity"] = affinity or None
    if _semantic(munged) != _semantic(old_spec):
        causes.append(("spec", "FieldValueForbidden", f"Forbidden: {ALLOWED_POD_UPDATES}"))
    if causes:
        raise invalid("Pod", name, causes)


def _metadata_immutable(old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for field in ("name", "namespace", "uid", "creationTimestamp"):
        before, after = old["metadata"].get(field), new.get("metadata", {}).get(field)
        if after is not None and after != before:
            causes.append(
                (
                    f"metadata.{field}",
                    "FieldValueInvalid",
                    f"Invalid value: {after!r}: field is immutable",
                )
            )
    return causes


def _tolerations(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[Cause]:
    def strip(t: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in t.items() if k != "tolerationSeconds"}

    new = [strip(t) for t in new_spec.get("tolerations") or []]
    for t in old_spec.get("tolerations") or []:
        if strip(t) not in new:
            return [
                (
                    "spec.tolerations",
                    "FieldValueForbidden",
                    "Forbidden: existing toleration "
                    "can not be modified except its tolerationSeconds",
                )
            ]
    return []


def _node_selector(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[Cause]:
    old, new = old_spec.get("nodeSelector") or {}, new_spec.get("nodeSelector") or {}
    if any(new.get(k) != v for k, v in old.items()):
        return [
            (
                "spec.nodeSelector",
                "FieldValueInvalid",
                f"Invalid value: {new}: only "
                "additions to spec.nodeSelector are allowed (no mutations or deletions)",
            )
        ]
    return []


def _required_terms(spec: dict[str, Any]) -> list[dict[str, Any]] | None:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return None
    return list(required.get("nodeSelectorTerms") or [])


def _node_affinity(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[Cause]:
    # Preferred terms may change freely; required terms may only be narrowed: same number of
    # terms (they are ORed), each keeping its old expressions in order and appending new ones
    # (expressions are ANDed).
    path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    old_terms = _required_terms(old_spec)
    if not old_terms:
        return []
    new_terms = _required_terms(new_spec) or []
    if len(new_terms) != len(old_terms):
        return [
            (
                f"{path}.nodeSelectorTerms",
                "FieldValueInvalid",
                f"Invalid value: {new_terms}:"
                " no additions/deletions to non-empty NodeSelectorTerms list are allowed",
            )
        ]
    causes: list[Cause] = []
    for i, (o, n) in enumerate(zip(old_terms, new_terms, strict=True)):
        for field in ("matchExpressions", "matchFields"):
            before, after = o.get(field) or [], n.get(field) or []
            if after[: len(before)] != before:
                causes.append(
                    (
                        f"{path}.nodeSelectorTerms[{i}]",
                        "FieldValueInvalid",
                        f"Invalid value: {n}: only additions are allowed (no mutations "
                        "or deletions)",
                    )
                )
                break
    return causes
