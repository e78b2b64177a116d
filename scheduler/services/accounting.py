"""Usage reports: allocated, measured, used and idle GPU time by tenant, class, reservation, day.

* **allocated** GPU-seconds: GPUs times the time a reservation was open (active), from the
  reservation rows, exact to the second. This is what budgets are charged with
  (:mod:`scheduler.budget`) and what fair-share decays (:mod:`scheduler.fairshare`); the report
  reads the same rows and charges nothing.
* **measured** GPU-seconds: the part of that time the node agents sampled (utilisation known).
* **used** GPU-seconds: measured time times utilisation.
* **idle** GPU-seconds: measured time whose utilisation was below ``idle_util_pct``.

Measured figures come from the hourly buckets of :mod:`scheduler.services.usage`, so a
report's range is widened to whole hours (and says so). The operator also sees what no
reservation could be charged with (``attributed`` false).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from scheduler.budget import overlap_s
from scheduler.domain import Principal, ReservationState
from scheduler.errors import InvalidInput
from scheduler.services.usage import BUCKET_S, bucket_of
from scheduler.tables import ReservationRow, UsageBucketRow

#: The longest range one report may cover.
MAX_RANGE = timedelta(days=366)


class GroupBy(StrEnum):
    TENANT = "tenant"
    GPU_CLASS = "gpu_class"
    RESERVATION = "reservation"
    DAY = "day"


#: The columns each grouping adds to a row, in order.
DIMENSIONS: dict[GroupBy, tuple[str, ...]] = {
    GroupBy.TENANT: ("tenant",),
    GroupBy.GPU_CLASS: ("gpu_class",),
    GroupBy.RESERVATION: ("reservation_id", "request_id", "tenant", "gpu_class", "gpus"),
    GroupBy.DAY: ("day",),
}
FIGURES = ("allocated_gpu_s", "measured_gpu_s", "used_gpu_s", "idle_gpu_s", "energy_j", "samples")


def columns(group_by: tuple[GroupBy, ...]) -> tuple[str, ...]:
    """The dimension columns of a report grouped by ``group_by`` (no repeats)."""
    out: list[str] = []
    for g in group_by:
        out.extend(c for c in DIMENSIONS[g] if c not in out)
    return tuple(out)


@dataclass(slots=True)
class UsageLine:
    """One row: its dimensions (by column name), whether it is charged to reservations, and
    its figures."""

    key: dict[str, Any]
    attributed: bool = True
    allocated_gpu_s: float = 0.0
    measured_gpu_s: float = 0.0
    used_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0
    energy_j: float = 0.0
    samples: int = 0

    @property
    def utilisation(self) -> float | None:
        """Mean utilisation while measured (0-1)."""
        return self.used_gpu_s / self.measured_gpu_s if self.measured_gpu_s > 0 else None

    def add(self, other: UsageLine) -> None:
        for name in FIGURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class UsageReport:
    start: datetime
    end: datetime
    group_by: tuple[GroupBy, ...]
    columns: tuple[str, ...]
    rows: list[UsageLine] = field(default_factory=list)
    totals: UsageLine = field(default_factory=lambda: UsageLine({}))


def parse_group_by(text: str) -> tuple[GroupBy, ...]:
    """``"tenant,day"`` -> (TENANT, DAY); a clear error naming ``group_by`` otherwise."""
    out: list[GroupBy] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            g = GroupBy(part)
        except ValueError:
            choices = ", ".join(g.value for g in GroupBy)
            raise InvalidInput.field(
                "group_by", f"{part!r} is not one of {choices} (comma-separated)"
            ) from None
        if g in out:
            raise InvalidInput.field("group_by", f"{part!r} is given twice")
        out.append(g)
    return tuple(out)


def _range(
    now: datetime, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """Default: this UTC month so far. Widened to whole buckets (hours)."""
    if start is None:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if end is None:
        end = now
    start = bucket_of(start)
    if bucket_of(end) != end:
        end = bucket_of(end) + timedelta(seconds=BUCKET_S)
    if end <= start:
        raise InvalidInput.field("end", "must be after start")
    if end - start > MAX_RANGE:
        raise InvalidInput.field("end", f"the range may cover at most {MAX_RANGE.days} days")
    return start, end


def _tenant_filter(who: Principal, tenant: str | None) -> str | None:
    if who.is_operator:
        return tenant
    if tenant and tenant != who.tenant:
        raise InvalidInput.field("tenant", "a tenant key sees its own usage only")
    return who.tenant


def _days(a: datetime, b: datetime) -> list[tuple[date, datetime, datetime]]:
    """``[a, b)`` cut at UTC midnights."""
    out = []
    while a < b:
        midnight = a.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        cut = min(b, midnight)
        out.append((a.date(), a, cut))
        a = cut
    return out


def report(
    session: Session,
    who: Principal,
    now: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    gpu_class: str | None = None,
    tenant: str | None = None,
    group_by: tuple[GroupBy, ...] = (GroupBy.TENANT,),
) -> UsageReport:
    """Usage in ``[start, end)`` grouped by ``group_by``; a tenant sees its own only."""
    tenant = _tenant_filter(who, tenant)
    start, end = _range(now, start, end)
    out = UsageReport(start, end, group_by, columns(group_by))
    lines: dict[tuple[Any, ...], UsageLine] = {}
    by_day = GroupBy.DAY in group_by

    def line(key: dict[str, Any], attributed: bool = True) -> UsageLine:
        k = (attributed, *(key.get(c) for c in out.columns))
        got = lines.get(k)
        if got is None:
            got = lines[k] = UsageLine({c: key.get(c) for c in out.columns}, attributed)
        return got

    reservations = _reservations(session, start, end, gpu_class, tenant)
    until = min(end, now)
    for r in reservations.values():
        held_to = min(r.end, r.ended_at) if r.ended_at is not None else r.end
        a, b = max(r.start, start), min(held_to, until)
        pieces: list[tuple[date | None, datetime, datetime]] = []
        pieces.extend(_days(a, b) if by_day else [(None, a, b)])
        for day, a, b in pieces:
            seconds = overlap_s(a, b, start, until)
            if seconds > 0:
                line(_dims(r, day)).allocated_gpu_s += r.gpus * seconds

    measured = _buckets(session, start, end, gpu_class, tenant, by_day)
    missing = {m[0] for m in measured if m[0] and m[0] not in reservations}
    if missing:
        for r in session.exec(select(ReservationRow).where(col(ReservationRow.id).in_(missing))):
            reservations[r.id or 0] = r
    for rid, row_class, day, figures in measured:
        if rid == 0:
            if not who.is_operator or tenant:
                continue
            target = line(
                {"gpu_class": row_class, "day": day.isoformat() if day else None},
                attributed=False,
            )
        else:
            held = reservations.get(rid)
            if held is None:  # pragma: no cover - reservations are never deleted once open
                continue
            target = line(_dims(held, day))
        target.add(figures)
    out.rows = sorted(lines.values(), key=_order)
    for row in out.rows:
        out.totals.add(row)
    return out


def _dims(r: ReservationRow, day: date | None) -> dict[str, Any]:
    return {
        "tenant": r.tenant,
        "gpu_class": r.gpu_class,
        "reservation_id": r.id,
        "request_id": r.request_id,
        "gpus": r.gpus,
        "day": day.isoformat() if day is not None else None,
    }


def _order(row: UsageLine) -> tuple[Any, ...]:
    """Charged rows first, then by dimensions (numbers as numbers, blanks first)."""
    return (
        not row.attributed,
        *((v is not None, v if isinstance(v, int) else 0, str(v)) for v in row.key.values()),
    )


def _reservations(
    session: Session,
    start: datetime,
    end: datetime,
    gpu_class: str | None,
    tenant: str | None,
) -> dict[int, ReservationRow]:
    """Opened reservations whose held time overlaps ``[start, end)``."""
    held_until = func.coalesce(ReservationRow.ended_at, ReservationRow.end)
    stmt = select(ReservationRow).where(
        col(ReservationRow.state).in_(
            [ReservationState.ACTIVE.value, ReservationState.ENDED.value]
        ),
        col(ReservationRow.start) < end,
        held_until > start,
    )
    if gpu_class:
        stmt = stmt.where(ReservationRow.gpu_class == gpu_class)
    if tenant:
        stmt = stmt.where(ReservationRow.tenant == tenant)
    return {r.id or 0: r for r in session.exec(stmt)}


def _buckets(
    session: Session,
    start: datetime,
    end: datetime,
    gpu_class: str | None,
    tenant: str | None,
    by_day: bool,
) -> list[tuple[int, str, date | None, UsageLine]]:
    """Bucket sums per reservation (and per bucket when days are asked for)."""
    b = UsageBucketRow
    keys: list[Any] = [b.reservation_id, b.tenant, b.gpu_class]
    if by_day:
        keys.append(b.bucket_start)
    stmt = (
        sa_select(
            *keys,
            func.sum(b.samples),
            func.sum(b.measured_gpu_s),
            func.sum(b.used_gpu_s),
            func.sum(b.idle_gpu_s),
            func.sum(b.energy_j),
        )
        .where(col(b.bucket_start) >= start, col(b.bucket_start) < end)
        .group_by(*keys)
    )
    if gpu_class:
        stmt = stmt.where(col(b.gpu_class) == gpu_class)
    if tenant:
        stmt = stmt.where(col(b.tenant) == tenant)
    out = []
    for row in session.execute(stmt).all():
        rid, row_class = row[0], row[2]
        day = row[3].date() if by_day else None
        samples, measured, used, idle_s, energy = row[-5:]
        figures = UsageLine(
            {},
            measured_gpu_s=float(measured or 0.0),
            used_gpu_s=float(used or 0.0),
            idle_gpu_s=float(idle_s or 0.0),
            energy_j=float(energy or 0.0),
            samples=int(samples or 0),
        )
        out.append((int(rid), str(row_class), day, figures))
    return out
