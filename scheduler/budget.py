"""GPU-hour budgets: periods, what has been charged, what is left.

A reservation is charged for the GPU-seconds it holds inside the budget period. For planning,
an open reservation counts as committed through its planned end (its GPUs are promised until
then); ``used`` is what has actually been held so far. Operators top a period up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from scheduler.domain import BudgetPeriod, ReservationState
from scheduler.tables import BudgetTopUpRow, QuotaRow, ReservationRow


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """Start of the budget period containing ``now`` (UTC calendar day, ISO week, month)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is BudgetPeriod.DAY:
        return day
    if period is BudgetPeriod.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: BudgetPeriod, now: datetime) -> datetime:
    start = period_start(period, now)
    if period is BudgetPeriod.DAY:
        return start + timedelta(days=1)
    if period is BudgetPeriod.WEEK:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def overlap_s(start: datetime, end: datetime, lo: datetime, hi: datetime | None = None) -> float:
    """Seconds of ``[start, end)`` inside ``[lo, hi)``."""
    a = max(start, lo)
    b = end if hi is None else min(end, hi)
    return max(0.0, (b - a).total_seconds())


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    period_start: datetime
    period_end: datetime
    budget_gpu_h: float
    top_up_gpu_h: float
    used_gpu_h: float
    committed_gpu_h: float

    @property
    def left_gpu_h(self) -> float:
        """What may still be planned: budget + top-ups - committed."""
        return max(0.0, self.budget_gpu_h + self.top_up_gpu_h - self.committed_gpu_h)


def statuses(
    session: Session, now: datetime, quotas: list[QuotaRow] | None = None
) -> dict[tuple[str, str], BudgetStatus]:
    """Budget status of every quota that has a budget."""
    if quotas is None:
        quotas = list(session.exec(select(QuotaRow)))
    budgeted = {(q.tenant, q.gpu_class): q for q in quotas if q.budget_gpu_hours is not None}
    if not budgeted:
        return {}
    starts = {key: period_start(BudgetPeriod(q.budget_period), now) for key, q in budgeted.items()}
    earliest = min(starts.values())
    held_until = func.coalesce(ReservationRow.ended_at, ReservationRow.end)
    reservations = session.exec(
        select(ReservationRow).where(
            or_(
                col(ReservationRow.state) == ReservationState.ACTIVE.value,
                (col(ReservationRow.state) == ReservationState.ENDED.value)
                & (held_until > earliest),
            )
        )
    ).all()
    used: dict[tuple[str, str], float] = defaultdict(float)
    committed: dict[tuple[str, str], float] = defaultdict(float)
    for r in reservations:
        key = (r.tenant, r.gpu_class)
        if key not in budgeted:
            continue
        lo = starts[key]
        if r.state == ReservationState.ACTIVE.value:
            used[key] += r.gpus * overlap_s(r.start, min(now, r.end), lo)
            committed[key] += r.gpus * overlap_s(r.start, r.end, lo)
        else:
            held = r.gpus * overlap_s(r.start, min(r.ended_at or r.end, r.end), lo)
            used[key] += held
            committed[key] += held
    top_ups: dict[tuple[str, str], float] = defaultdict(float)
    for t in session.exec(
        select(BudgetTopUpRow).where(col(BudgetTopUpRow.period_start) >= earliest)
    ):
        key = (t.tenant, t.gpu_class)
        if key in starts and t.period_start == starts[key]:
            top_ups[key] += t.gpu_hours
    out = {}
    for key, q in budgeted.items():
        period = BudgetPeriod(q.budget_period)
        out[key] = BudgetStatus(
            period_start=starts[key],
            period_end=period_end(period, now),
            budget_gpu_h=float(q.budget_gpu_hours or 0.0),
            top_up_gpu_h=top_ups.get(key, 0.0),
            used_gpu_h=used.get(key, 0.0) / 3600,
            committed_gpu_h=committed.get(key, 0.0) / 3600,
        )
    return out
