"""Small builders for hand-made solver problems."""

from __future__ import annotations

from collections.abc import Iterable

from solver import Node, Problem, Quota, Request, Running, Tenant

NOW = 1_699_999_200  # on the hour: the planning grid is aligned to the epoch
H = 3600


def nodes(count: int, gpus: int = 8, cls: str = "H100", prefix: str = "n") -> tuple[Node, ...]:
    return tuple(Node(f"{prefix}{i}", cls, gpus) for i in range(count))


def tenant(
    name: str, guaranteed: int = 0, limit: int = 64, budget: float | None = None, **kw: float
) -> Tenant:
    return Tenant(name, {"H100": Quota(guaranteed, limit, budget)}, **kw)


def req(
    rid: int,
    tenant_name: str = "a",
    gpus: int = 8,
    per_node: int | None = None,
    hours: float = 1.0,
    **kw: object,
) -> Request:
    return Request(
        id=rid,
        tenant=tenant_name,
        gpu_class=str(kw.pop("cls", "H100")),
        gpus=gpus,
        gpus_per_node=per_node or min(gpus, 8),
        duration_s=int(hours * H),
        submitted_at=int(kw.pop("submitted_at", NOW - 100 + rid)),  # type: ignore[call-overload]
        **kw,  # type: ignore[arg-type]
    )


def problem(
    node_list: Iterable[Node],
    tenants: Iterable[Tenant],
    requests: Iterable[Request],
    running: Iterable[Running] = (),
    **kw: object,
) -> Problem:
    return Problem(
        now=NOW,
        nodes=tuple(node_list),
        tenants={t.name: t for t in tenants},
        requests=tuple(requests),
        running=tuple(running),
        **kw,  # type: ignore[arg-type]
    )
