"""Shapes shared by all resources."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

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
