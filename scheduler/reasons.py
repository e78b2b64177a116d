"""Reason codes and the sentences a person reads next to them.

Every waiting request carries a machine-readable ``reason_code`` and a ``reason_message``.
The solver gives the code and what stands in the way; this module words it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scheduler.clock import from_epoch
from solver import Reason, Unplaced

#: Codes the scheduler adds to the solver's :class:`solver.Reason` members.
NOT_PLANNED_YET = "not_planned_yet"
PLANNED = "planned"
NOT_BEFORE_BEYOND_HORIZON = "not_before_beyond_horizon"


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about the request a sentence may quote."""

    gpus: int
    gpu_class: str
    tenant: str
    limit: int | None = None
    guaranteed: int | None = None
    budget_left_gpu_h: float | None = None
    need_gpu_h: float | None = None


def _at(t: int | datetime | None) -> str:
    if t is None:
        return "an unknown time"
    when = from_epoch(t) if isinstance(t, int) else t
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _blockers(u: Unplaced) -> str:
    tenants = sorted({name for kind, name in u.blocking if kind == "tenant"})
    if not tenants:
        return ""
    shown = ", ".join(tenants[:3]) + (" and others" if len(tenants) > 3 else "")
    return f" (held by reservations of {shown})"


def unplaced_sentence(u: Unplaced, ctx: Context) -> str:
    """A sentence for a request the plan could not place within its horizon."""
    r = u.reason
    if r is Reason.QUOTA_EXHAUSTED:
        limit = f"{ctx.limit} " if ctx.limit is not None else ""
        return (
            f"Tenant {ctx.tenant} has its limit of {limit}{ctx.gpu_class} GPUs in use or "
            f"reserved by its other requests for the whole planning horizon."
        )
    if r is Reason.BUDGET_EXHAUSTED:
        left = f"{ctx.budget_left_gpu_h:.1f}" if ctx.budget_left_gpu_h is not None else "too few"
        need = f"{ctx.need_gpu_h:.1f}" if ctx.need_gpu_h is not None else "more"
        return (
            f"Tenant {ctx.tenant} has {left} {ctx.gpu_class} GPU-hours of budget left this "
            f"period and this request needs {need}; an operator can top the budget up."
        )
    if r is Reason.CAPACITY_BUSY:
        return (
            f"All {ctx.gpu_class} GPUs that fit this request are reserved for the planning "
            f"horizon{_blockers(u)}; earliest possible start {_at(u.earliest_start)}."
        )
    if r is Reason.WAITING_FOR_HIGHER_PRIORITY:
        return (
            f"{ctx.gpu_class} GPUs are going to requests of higher priority or to guaranteed "
            f"quota first{_blockers(u)}."
        )
    if r is Reason.NO_SUCH_GPU_CLASS:
        return f"The pool has no {ctx.gpu_class} nodes at present."
    if r is Reason.TOO_LARGE_FOR_POOL:
        return f"No set of {ctx.gpu_class} nodes in the pool can hold this gang of {ctx.gpus} GPUs."
    if r is Reason.BEYOND_HORIZON:
        return (
            f"The {ctx.gpu_class} GPUs it needs are reserved for the whole planning horizon"
            f"{_blockers(u)}; it may start around {_at(u.earliest_start)}, and will be planned "
            f"when that comes within the horizon."
        )
    if r is Reason.DEADLINE_UNREACHABLE:
        return "The GPUs it needs are not free long enough to finish before its deadline."
    if r is Reason.NODES_DRAINING:
        return (
            f"Enough {ctx.gpu_class} nodes exist, but some are drained or not ready, and the "
            f"rest cannot hold this gang."
        )
    if r is Reason.NOT_PREEMPTIBLE_NO_GUARANTEE:
        g = ctx.guaranteed if ctx.guaranteed is not None else 0
        return (
            f"A non-preemptible request runs only inside guaranteed quota, and tenant "
            f"{ctx.tenant} has {g} guaranteed {ctx.gpu_class} GPUs free for it."
        )
    return u.detail or r.value


def planned_sentence(start: datetime, end: datetime, kind: str, now: datetime) -> str:
    share = "guaranteed quota" if kind == "guaranteed" else "borrowed idle capacity (reclaimable)"
    if start <= now:
        return f"Running on {share} until {_at(end)}."
    return (
        f"Planned to start at {_at(start)} on {share}; the GPUs it needs are reserved until then."
    )
