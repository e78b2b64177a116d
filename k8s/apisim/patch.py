"""The three patch formats of the Kubernetes API: JSON patch (RFC 6902), JSON merge patch
(RFC 7386) and strategic merge patch.

Strategic merge patch is implemented for the fields of the objects this project touches:
lists with a merge key (containers by ``name``, scheduling gates by ``name``, conditions by
``type``...) are merged element by element, other lists are replaced; the directives
``$patch`` (``replace``/``delete``/``merge``), ``$retainKeys``, ``$deleteFromPrimitiveList/<f>``
and ``$setElementOrder/<f>`` are understood. A failing patch raises :class:`ApiError` with the
code the API server uses (400 for a malformed patch, 422 for one that cannot be applied).
"""

from __future__ import annotations

import copy
from typing import Any

from k8s.apisim.errors import ApiError, bad_request, unprocessable

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

# Merge keys of the lists that strategic merge patch merges instead of replacing, by field
# name (the API's patchMergeKey tags for the core objects we serve).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "schedulingGates": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "hostAliases": "ip",
    "addresses": "type",
}
# Lists of scalars whose strategy is "merge" (set union) rather than replace.
MERGED_SCALAR_LISTS = frozenset({"finalizers"})


def apply_patch(target: dict[str, Any], patch_type: str, patch: Any) -> dict[str, Any]:
    """Return a patched deep copy of ``target``; ``target`` itself is left untouched."""
    doc = copy.deepcopy(target)
    if patch_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        patched: dict[str, Any] = _json_patch(doc, patch)
        return patched
    if not isinstance(patch, dict):
        raise bad_request("merge patch must be a JSON object")
    if patch_type == MERGE_PATCH:
        merged: dict[str, Any] = _merge_patch(doc, patch)
        return merged
    if patch_type == STRATEGIC_MERGE_PATCH:
        return _strategic_merge(doc, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown "
        f"format - accepted media types include: {', '.join(PATCH_TYPES)}",
    )


# -- JSON patch (RFC 6902) -----------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise unprocessable(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node, parts[-1]


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise unprocessable(f"doc is missing path: {path!r}")
        return node[part]
    if isinstance(node, list):
        index = _index(node, part, path, allow_end=False)
        return node[index]
    raise unprocessable(f"doc is missing path: {path!r}")


def _index(node: list[Any], part: str, path: str, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(node)
    if not part.isdigit() or (len(part) > 1 and part.startswith("0")):
        raise unprocessable(f"invalid array index {part!r} in {path!r}")
    index = int(part)
    limit = len(node) if allow_end else len(node) - 1
    if index > limit:
        raise unprocessable(f"array index out of bounds in {path!r}")
    return index


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = _child(node, part, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise unprocessable(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise unprocessable(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, allow_end=False))
    raise unprocessable(f"doc is missing path: {path!r}")


def _json_patch(doc: Any, ops: list[Any]) -> Any:
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch {kind} operation on {path!r} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise unprocessable(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise bad_request(f"json patch {kind} operation needs 'from'")
            if kind == "move":
                doc, value = _remove(doc, source)
            else:
                value = copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        else:
            raise bad_request(f"unexpected json patch operation {kind!r}")
    if not isinstance(doc, dict):
        raise unprocessable("patch result is not an object")
    return doc


# -- JSON merge patch (RFC 7386) ---------------------------------------------------------
def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# -- strategic merge patch ---------------------------------------------------------------
def _strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise bad_request(f"unknown patch type: {directive!r} in map")
    result = dict(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            continue  # ordering hint for lists; order of merged lists is kept as is
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if not isinstance(value, list):
                raise bad_request(f"{key} must be a list")
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if key.startswith("$"):
            raise bad_request(f"unknown strategic merge patch directive {key!r}")
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                current = result.get(key)
                result[key] = _strategic_merge(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    if retain is not None:
        if not isinstance(retain, list):
            raise bad_request("$retainKeys must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            copy.deepcopy(i)
            for i in patch
            if not (isinstance(i, dict) and i.get("$patch") == "replace")
        ]
    key = MERGE_KEYS.get(field)
    if key is None:
        if field in MERGED_SCALAR_LISTS and isinstance(current, list):
            return current + [v for v in patch if v not in current]
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(i) for i in current] if isinstance(current, list) else []
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise bad_request(f"map in list {field} is missing its merge key {key!r}: {item!r}")
        matches = [i for i, old in enumerate(merged) if _key_of(old, key) == item[key]]
        position = matches[0] if matches else None
        if item.get("$patch") == "delete":
            if position is not None:
                merged.pop(position)
            continue
        if position is None:
            merged.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            merged[position] = _strategic_merge(merged[position], item)
    return merged


def _key_of(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else None
