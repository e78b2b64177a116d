"""Decayed usage per tenant: the fair-share input of the planner.

A GPU-second used at time t counts ``2 ** (-(T - t) / half_life)`` at time T (Slurm's
``PriorityDecayHalfLife``, default 7 days). The stored value is brought forward each cycle:
decay what was there, then add what reservations held since, decayed exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from scheduler.domain import ReservationState
from scheduler.tables import ReservationRow, TenantRow, TenantUsageRow


class _HeldRow(Protocol):
    """A reservation's columns as ``accrue`` selects them: a SQLAlchemy ``Row``, read by name
    (the stubs cannot type a row's attributes)."""

    @property
    def tenant(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def ended_at(self) -> datetime | None: ...
    @property
    def state(self) -> str: ...


def decay_factor(seconds: float, half_life_s: float) -> float:
    return float(2.0 ** (-seconds / half_life_s))


def decayed_integral(a: float, b: float, at: float, half_life_s: float) -> float:
    """``∫_a^b 2^(-(at - t)/h) dt`` for ``a <= b <= at`` (seconds since any common origin)."""
    if b <= a:
        return 0.0
    k = math.log(2) / half_life_s
    return (math.exp(-k * (at - b)) - math.exp(-k * (at - a))) / k


def accrue(session: Session, now: datetime, half_life_s: float) -> dict[str, float]:
    """Bring every tenant's decayed usage up to ``now``; returns it per tenant (GPU-seconds)."""
    rows = {r.tenant: r for r in session.exec(select(TenantUsageRow))}
    tenants = list(session.exec(select(TenantRow.name)))
    since = min((r.as_of for r in rows.values()), default=None)
    held_until = func.coalesce(ReservationRow.ended_at, ReservationRow.end)
    # Plain column rows: every open reservation is read each cycle, under the write lock.
    # sqlmodel's select() is typed for at most four columns; at run time it takes any number.
    stmt = select(  # type: ignore[call-overload]
        col(ReservationRow.tenant),
        col(ReservationRow.gpus),
        col(ReservationRow.start),
        col(ReservationRow.end),
        col(ReservationRow.ended_at),
        col(ReservationRow.state),
    ).where(
        col(ReservationRow.state).in_(
            [ReservationState.ACTIVE.value, ReservationState.ENDED.value]
        ),
        col(ReservationRow.start) < now,
    )
    if since is not None and len(rows) == len(tenants):
        stmt = stmt.where(
            or_(col(ReservationRow.state) == ReservationState.ACTIVE.value, held_until > since)
        )
    added: dict[str, float] = defaultdict(float)
    raw: dict[str, float] = defaultdict(float)
    t_now = now.timestamp()
    for r in cast("Iterable[_HeldRow]", session.exec(stmt)):
        usage = rows.get(r.tenant)
        a = r.start.timestamp()
        end = r.end if r.state == ReservationState.ACTIVE.value else min(r.ended_at or r.end, r.end)
        b = min(end.timestamp(), t_now)
        if usage is not None:
            a = max(a, usage.as_of.timestamp())
        if b <= a:
            continue
        added[r.tenant] += r.gpus * decayed_integral(a, b, t_now, half_life_s)
        raw[r.tenant] += r.gpus * (b - a)
    out: dict[str, float] = {}
    for tenant in tenants:
        usage = rows.get(tenant)
        if usage is None:
            usage = TenantUsageRow(tenant=tenant, as_of=now)
            previous = 0.0
        else:
            previous = usage.decayed_gpu_s * decay_factor(
                (now - usage.as_of).total_seconds(), half_life_s
            )
        usage.decayed_gpu_s = previous + added.get(tenant, 0.0)
        usage.total_gpu_s += raw.get(tenant, 0.0)
        usage.as_of = now
        session.add(usage)
        out[tenant] = usage.decayed_gpu_s
    session.flush()
    return out
