"""Pure planning: a :class:`~solver.model.Problem` in, a :class:`~solver.model.Plan` out.

This package imports nothing from ``scheduler``, ``api``, ``k8s`` or ``metrics`` (a CI check
enforces it), so that it can be tested, benchmarked and replayed on its own.
"""

from solver.api import SolverConfig, plan, validate
from solver.checks import ProblemError
from solver.model import (
    Allocation,
    Assignment,
    Node,
    Plan,
    Preemption,
    Problem,
    Quota,
    Reason,
    Request,
    ReservationKind,
    Running,
    Tenant,
    Unplaced,
    allocation_of,
)
from solver.validate import Violation

__all__ = [
    "Allocation",
    "Assignment",
    "Node",
    "Plan",
    "Preemption",
    "Problem",
    "ProblemError",
    "Quota",
    "Reason",
    "Request",
    "ReservationKind",
    "Running",
    "SolverConfig",
    "Tenant",
    "Unplaced",
    "Violation",
    "allocation_of",
    "plan",
    "validate",
]
