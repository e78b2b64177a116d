"""API errors as the Kubernetes API server reports them (a ``Status`` object and a code)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refused API call: HTTP ``code``, machine ``reason`` (``NotFound``, ``Conflict``,
    ``Invalid``...), a human ``message`` and optional field ``causes``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        name: str = "",
        causes: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.causes = causes or []

    def status(self) -> dict[str, Any]:
        """The ``Status`` body the API server sends with this error."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', kind=resource, name=name)


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{resource} "{name}" already exists', kind=resource, name=name
    )


def conflict(resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=resource,
        name=name,
    )


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unprocessable(message: str) -> ApiError:
    """A patch that cannot be applied (the API server answers 422 without a kind)."""
    return ApiError(422, "Invalid", message)


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """Field validation failed; ``causes`` are ``(field, reason type, message)`` triples."""
    text = "; ".join(f"{f}: {m}" for f, _, m in causes)
    # Mirrors the API server's wording: 'Pod "x" is invalid: spec.foo: Forbidden: ...'
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        kind=kind,
        name=name,
        causes=[{"field": f, "reason": r, "message": m} for f, r, m in causes],
    )
