"""The vocabulary of DESIGN.md as enums and small value types shared by services and the API."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RequestState(StrEnum):
    PENDING = "pending"
    PLANNED = "planned"
    ACTIVE = "active"
    COMPLETED = "completed"
    EXPIRED = "expired"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


WAITING_STATES = frozenset({RequestState.PENDING, RequestState.PLANNED})
#: Their stored values (for membership tests and SQL ``IN``).
WAITING_VALUES = tuple(sorted(s.value for s in WAITING_STATES))
TERMINAL_STATES = frozenset(
    {
        RequestState.COMPLETED,
        RequestState.EXPIRED,
        RequestState.PREEMPTED,
        RequestState.CANCELLED,
        RequestState.REJECTED,
        RequestState.FAILED,
    }
)

#: Which state may follow which. ``preempted`` is terminal only for requests that asked not
#: to be requeued; the others go straight back to ``pending``.
TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {RequestState.PLANNED, RequestState.ACTIVE, RequestState.CANCELLED, RequestState.REJECTED}
    ),
    RequestState.PLANNED: frozenset(
        {
            RequestState.PENDING,
            RequestState.ACTIVE,
            RequestState.CANCELLED,
            RequestState.REJECTED,
        }
    ),
    RequestState.ACTIVE: frozenset(
        {
            RequestState.COMPLETED,
            RequestState.EXPIRED,
            RequestState.PREEMPTED,
            RequestState.CANCELLED,
            RequestState.FAILED,
        }
    ),
    RequestState.PREEMPTED: frozenset({RequestState.PENDING}),
    RequestState.COMPLETED: frozenset(),
    RequestState.EXPIRED: frozenset(),
    RequestState.CANCELLED: frozenset(),
    RequestState.REJECTED: frozenset(),
    RequestState.FAILED: frozenset(),
}


class ReservationState(StrEnum):
    PLANNED = "planned"
    ACTIVE = "active"
    ENDED = "ended"


class ReservationKind(StrEnum):
    GUARANTEED = "guaranteed"
    BORROWED = "borrowed"


class BudgetPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Role(StrEnum):
    OPERATOR = "operator"
    TENANT = "tenant"
    AGENT = "agent"
    CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, a tenant's API key, or a node agent."""

    role: Role
    tenant: str | None = None
    key_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller (never a secret)."""
        if self.role is Role.TENANT:
            return f"tenant:{self.tenant}/key:{self.key_id}"
        return self.role.value

    @property
    def is_operator(self) -> bool:
        """The operator, or the controller acting for the hub: sees every tenant's objects."""
        return self.role in (Role.OPERATOR, Role.CONTROLLER)


OPERATOR = Principal(Role.OPERATOR)
CONTROLLER = Principal(Role.CONTROLLER)
AGENT = Principal(Role.AGENT)  # any node agent: they share the agent token
