"""Label and field selectors in the query-string syntax of the Kubernetes API."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from k8s.apisim.errors import bad_request

Matcher = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


def _requirement(text: str) -> Matcher:
    m = _SET.match(text)
    if m:
        key, op, raw = m.group(1), m.group(2), m.group(3)
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in text:
            key, value = (s.strip() for s in text.split(op, 1))
            if not key:
                raise bad_request(f"invalid label selector {text!r}")
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if text.startswith("!"):
        key = text[1:].strip()
        return lambda labels: key not in labels
    key = text
    if " " in key:
        raise bad_request(f"invalid label selector {text!r}")
    return lambda labels: key in labels


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on a label mapping; an empty selector matches everything."""
    requirements = [_requirement(p) for p in _split(selector or "")]
    return lambda labels: all(r(labels) for r in requirements)


_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
    "metadata.namespace": lambda o: str(o.get("metadata", {}).get("namespace", "")),
    "spec.nodeName": lambda o: str(o.get("spec", {}).get("nodeName", "")),
    "status.phase": lambda o: str(o.get("status", {}).get("phase", "")),
    "spec.unschedulable": lambda o: str(bool(o.get("spec", {}).get("unschedulable"))).lower(),
}


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """A predicate on a whole object for the fields this fake indexes."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split(selector or ""):
        negate = "!=" in part
        key, value = (s.strip() for s in part.replace("!=", "=").replace("==", "=").split("=", 1))
        getter = _FIELDS.get(key)
        if getter is None:
            raise bad_request(f'field label not supported: "{key}"')

        def check(
            o: dict[str, Any], g: Callable[..., str] = getter, v: str = value, n: bool = negate
        ) -> bool:
            return (g(o) == v) != n

        checks.append(check)
    return lambda obj: all(c(obj) for c in checks)
