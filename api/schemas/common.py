"""Shapes shared by all resources."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

#: Tenants and namespaces share names: a DNS label (Kubernetes label values must match too).
TenantName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
    Field(description="Lower-case DNS label, at most 63 characters.", examples=["acme"]),
]
#: GPU class names as NVIDIA's product label writes them, e.g. ``H100-80GB``.
ClassName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
    Field(description="Letters, digits, '.', '_', '-'; at most 63.", examples=["H100-80GB"]),
]
#: Kubernetes node names: DNS subdomains.
NodeName = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
    ),
    Field(description="A DNS subdomain, as Kubernetes node names are.", examples=["gpu-node-01"]),
]


#: Database ids: positive 64-bit integers (a larger number cannot name anything stored).
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class Strict(BaseModel):
    """Input models refuse unknown fields, so a typo is an error rather than a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )


class ProblemDetail(BaseModel):
    """RFC 9457 problem details, as every error is returned (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, str]] | None = None


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ProblemDetail.model_json_schema()}},
    }


#: The errors every authenticated endpoint may answer, documented once for all routers.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Malformed JSON"),
    401: _problem("Missing, unknown or revoked credentials"),
    403: _problem("Valid credentials without the right role, or a deactivated tenant"),
    404: _problem("Not found, or not visible to the caller"),
    409: _problem("Name taken, or the object's state does not allow it"),
    413: _problem("Request body too large"),
    422: _problem("Invalid input: `errors` names each field and why"),
    429: _problem("Too many requests for this key: see Retry-After"),
    503: _problem("The database is unreachable: see Retry-After"),
}
