"""The domain's errors: one tree, each with a stable ``code`` and an HTTP status.

The API maps them to RFC 9457 problem+json in one place (``api.errors``); the CLI prints
``code: detail``. Services raise these and nothing else for expected failures.

    GpupoolError
    ├── InvalidInput        422  bad field values; ``errors`` names each field and why
    ├── NotFound            404  no such object, or not visible to the caller
    ├── Conflict            409
    │   ├── AlreadyExists   409  a name is taken
    │   ├── InvalidState    409  the object's state does not allow the operation
    │   └── NoRoom          409  the plan has no room for the change (an extension)
    ├── Unauthorized        401  missing, unknown or revoked credentials
    ├── Forbidden           403  valid credentials without the right role
    ├── RateLimited         429  too many requests for this key (``retry_after_s``)
    └── Unavailable         503  a dependency (the database) is down
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``field`` is its name as the caller wrote it (dotted for nesting)."""

    field: str
    reason: str


class GpupoolError(Exception):
    code = "error"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(GpupoolError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"

    @classmethod
    def field(cls, field: str, reason: str) -> InvalidInput:
        return cls(f"{field}: {reason}", errors=[FieldError(field, reason)])


class NotFound(GpupoolError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(GpupoolError):
    code = "conflict"
    status = 409
    title = "Conflict"


class AlreadyExists(Conflict):
    code = "already_exists"
    title = "Already exists"


class InvalidState(Conflict):
    code = "invalid_state"
    title = "Invalid state"


class NoRoom(Conflict):
    code = "no_room"
    title = "No room in the plan"


class Unauthorized(GpupoolError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(GpupoolError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class RateLimited(GpupoolError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(GpupoolError):
    code = "unavailable"
    status = 503
    title = "Service unavailable"
