"""Budget periods and the GPU-seconds charged to a tenant's budget in one."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.domain import BudgetPeriod


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """Start of the budget period containing ``now`` (UTC calendar day, ISO week, month)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is BudgetPeriod.DAY:
        return day
    if period is BudgetPeriod.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def overlap_s(start: datetime, end: datetime, lo: datetime, hi: datetime | None = None) -> float:
    """Seconds of ``[start, end)`` inside ``[lo, hi)``."""
    a = max(start, lo)
    b = end if hi is None else min(end, hi)
    return max(0.0, (b - a).total_seconds())
