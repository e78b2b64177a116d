"""Plain data in and out of the planner.

This module is the contract between the scheduler (which builds a :class:`Problem` from a
database snapshot) and the planners (which return a :class:`Plan`). Everything is frozen,
hashable where it can be, and free of database, web or Kubernetes types, so that a problem can
be pickled, replayed and benchmarked on its own.

Times are whole seconds since the Unix epoch (UTC); durations are whole seconds. GPU counts are
whole GPUs. An allocation is a tuple of ``(node name, GPUs on that node)`` pairs, sorted by node
name, so that two equal allocations compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_HORIZON_S = 7 * 24 * 3600
DEFAULT_RESOLUTION_S = 60
DEFAULT_MIN_RUNTIME_S = 600

Allocation = tuple[tuple[str, int], ...]


def allocation_of(mapping: Mapping[str, int]) -> Allocation:
    """Canonical allocation tuple from a ``{node: gpus}`` mapping (zero entries dropped)."""
    return tuple(sorted((n, g) for n, g in mapping.items() if g > 0))


class ReservationKind(StrEnum):
    """Whether a reservation sits inside the tenant's guaranteed quota or borrows idle GPUs."""

    GUARANTEED = "guaranteed"
    BORROWED = "borrowed"


class Reason(StrEnum):
    """Why a request has no reservation in a plan (machine-readable; the API adds a sentence)."""

    QUOTA_EXHAUSTED = "quota_exhausted"
    BUDGET_EXHAUSTED = "budget_exhausted"
    CAPACITY_BUSY = "capacity_busy_until"
    WAITING_FOR_HIGHER_PRIORITY = "waiting_for_higher_priority"
    NO_SUCH_GPU_CLASS = "no_such_gpu_class"
    TOO_LARGE_FOR_POOL = "too_large_for_pool"
    DEADLINE_UNREACHABLE = "deadline_unreachable"
    NODES_DRAINING = "nodes_draining"
    NOT_PREEMPTIBLE_NO_GUARANTEE = "no_guaranteed_quota"
    BEYOND_HORIZON = "beyond_horizon"


@dataclass(frozen=True, slots=True)
class Node:
    """A machine with ``gpus`` GPUs of one class. A draining node takes no new reservations;
    reservations already running on it keep their GPUs."""

    name: str
    gpu_class: str
    gpus: int
    schedulable: bool = True


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's quota for one GPU class.

    ``guaranteed``: GPUs always obtainable (reclaimed from borrowers when needed).
    ``limit``: most GPUs held at once, guaranteed plus borrowed.
    ``budget_gpu_s``: GPU-seconds the tenant may still be planned in this budget period;
    ``None`` means no budget is set.
    """

    guaranteed: int
    limit: int
    budget_gpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as the planner sees it. ``usage`` is decayed GPU-seconds (fair-share input);
    ``weight`` scales the tenant's entitled share. A class missing from ``quotas`` means the
    tenant may not use that class at all."""

    name: str
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    weight: float = 1.0
    usage: float = 0.0


@dataclass(frozen=True, slots=True)
class Request:
    """A request waiting for a reservation (pending, or planned but not yet started).

    ``gpus`` must be a multiple of ``gpus_per_node``: the gang is ``gpus // gpus_per_node``
    distinct nodes with ``gpus_per_node`` GPUs each, all starting together. A request that is
    not ``preemptible`` is only placed inside its tenant's guaranteed quota.
    """

    id: int
    tenant: str
    gpu_class: str
    gpus: int
    gpus_per_node: int
    duration_s: int
    submitted_at: int
    not_before: int | None = None
    deadline: int | None = None
    priority: int = 0
    preemptible: bool = True

    @property
    def nodes_needed(self) -> int:
        return self.gpus // self.gpus_per_node


@dataclass(frozen=True, slots=True)
class Running:
    """A reservation whose window is open: it holds ``allocation`` from ``start`` to ``end``.

    It never moves. A borrowed, preemptible one may be ended early by the plan (a
    :class:`Preemption`) once it has run at least the problem's ``min_runtime_s``.
    """

    request_id: int
    tenant: str
    gpu_class: str
    allocation: Allocation
    start: int
    end: int
    kind: ReservationKind
    priority: int = 0
    preemptible: bool = True

    @property
    def gpus(self) -> int:
        return sum(g for _, g in self.allocation)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The plan's answer to one request: ``allocation`` from ``start`` to ``end``."""

    request_id: int
    allocation: Allocation
    start: int
    end: int
    kind: ReservationKind

    @property
    def gpus(self) -> int:
        return sum(g for _, g in self.allocation)


@dataclass(frozen=True, slots=True)
class Unplaced:
    """Why a request has no assignment. ``earliest_start`` is the soonest start the planner
    could promise if one is known (beyond the horizon, say); ``blocking`` names what stands
    in the way as ``(kind, name)`` pairs, e.g. ``("tenant", "acme")`` or ``("quota", "limit")``.
    """

    request_id: int
    reason: Reason
    detail: str = ""
    earliest_start: int | None = None
    blocking: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Preemption:
    """End the running borrowed reservation of ``request_id`` at ``at`` to return guaranteed
    capacity to ``for_tenant``."""

    request_id: int
    at: int
    for_tenant: str
    reason: str = "reclaim"


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a planner needs, as of ``now``.

    ``previous`` is the last plan's assignment for requests still waiting, so a planner can
    keep ETAs stable. Reservations must start within ``[now, now + horizon_s)``.
    ``promised`` maps requests to starts promised on guaranteed quota by earlier plans (the
    scheduler stores them); :func:`solver.plan` keeps them (:mod:`solver.promises`: it tightens
    their deadlines and list planners place them first).
    """

    now: int
    nodes: tuple[Node, ...]
    tenants: Mapping[str, Tenant]
    requests: tuple[Request, ...]
    running: tuple[Running, ...] = ()
    previous: Mapping[int, Assignment] = field(default_factory=dict)
    horizon_s: int = DEFAULT_HORIZON_S
    resolution_s: int = DEFAULT_RESOLUTION_S
    min_runtime_s: int = DEFAULT_MIN_RUNTIME_S
    promised: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """A planner's output: an assignment or a reason for every request of the problem, the
    preemptions it decides, and how good it is (``objective``, ``bound``, ``gap`` in the
    planner's own objective units; a planner that proves nothing reports ``bound`` = ``None``).
    """

    assignments: Mapping[int, Assignment]
    unplaced: Mapping[int, Unplaced]
    preemptions: tuple[Preemption, ...] = ()
    status: str = "FEASIBLE"
    planner: str = "greedy"
    objective: float = 0.0
    bound: float | None = None
    gap: float | None = None
    solve_time_s: float = 0.0
    notes: tuple[str, ...] = ()
