"""Idle reservations: GPUs held but not used, found from the node agents' sampling passes.

A reservation is *busy* in a pass over a node (the samples sharing one ``ts``) when a GPU
charged to it there is at or above ``idle_util_pct`` (or its utilisation is unknown), or when
the node runs pods nobody's reservation accounts for (its owner is then uncertain). It is
*idle* when, on every node it holds, the passes have run without a break and without it being
busy for ``idle_minutes``. A break in the passes (no samples) restarts the clock: no data is
never taken for idle.

A reservation found idle gets one ``idle`` request event and an open
:class:`~scheduler.tables.IdleEpisodeRow` (the ``gpupool_idle_reserved_gpus`` metric), and,
as the operator chose (``idle_action``), nothing more, an early end (the request expires with
reason ``idle_ended``), or its kind turned to *borrowed* so that guaranteed demand may
reclaim it. A busy pass closes the episode; a borrowed reservation stays borrowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import update
from sqlmodel import Session, col, select

from scheduler import lifecycle
from scheduler.domain import RequestState, ReservationKind, ReservationState
from scheduler.services.requests import end_active_reservation
from scheduler.settings import Settings
from scheduler.tables import (
    IdleEpisodeRow,
    IdleTrackerRow,
    RequestRow,
    ReservationNodeRow,
    ReservationRow,
)

if TYPE_CHECKING:
    from scheduler.services.usage import Attribution

#: A run of passes broken for longer than this many sampling intervals starts again.
GAP_INTERVALS = 3
#: Trackers not updated for this long are dropped (their reservation is long over).
TRACKER_TTL = timedelta(days=1)


class _Held(Protocol):
    @property
    def reservation_id(self) -> int: ...


@dataclass(slots=True)
class _Pass:
    holdings: set[int] = field(default_factory=set)
    busy: set[int] = field(default_factory=set)
    uncertain: bool = False


class Passes:
    """What one push says about each reservation in each sampling pass of its node."""

    def __init__(self, idle_util_pct: float) -> None:
        self.threshold = idle_util_pct
        self.by_ts: dict[datetime, _Pass] = {}

    def saw(
        self, ts: datetime, here: Iterable[_Held], who: Attribution, util_pct: float | None
    ) -> None:
        p = self.by_ts.get(ts)
        if p is None:
            p = self.by_ts[ts] = _Pass()
        p.holdings.update(h.reservation_id for h in here)
        if who.foreign or who.mismatch:
            p.uncertain = True
        if util_pct is None or util_pct >= self.threshold:
            p.busy.update(h.reservation_id for h in who.holdings)


@dataclass(frozen=True, slots=True)
class Flagged:
    """A reservation found idle by this push, and what was done about it."""

    reservation_id: int
    request_id: int
    tenant: str
    gpu_class: str
    gpus: int
    idle_since: datetime
    action: str


class _Changed(Exception):
    """The request changed while the action ran: leave it to the next push."""


def _low_since(t: IdleTrackerRow) -> datetime:
    return max(t.seen_since, t.last_busy) if t.last_busy is not None else t.seen_since


def follow(
    session: Session,
    now: datetime,
    settings: Settings,
    node: str,
    interval_s: float,
    passes: Passes,
) -> list[Flagged]:
    """Bring the node's trackers up to date with ``passes``, close the idle episodes of
    reservations seen busy, and flag (and act on) the reservations now idle."""
    if not passes.by_ts:
        return []
    gap = timedelta(seconds=GAP_INTERVALS * interval_s)
    rids = {rid for p in passes.by_ts.values() for rid in p.holdings}
    newest = max(passes.by_ts)
    trackers: dict[int, IdleTrackerRow] = {}
    for row in session.exec(select(IdleTrackerRow).where(IdleTrackerRow.node == node)):
        if row.reservation_id in rids:
            trackers[row.reservation_id] = row
        elif row.last_seen < newest - TRACKER_TTL:
            session.delete(row)  # its reservation is long over
    busy: set[int] = set()
    for ts in sorted(passes.by_ts):
        p = passes.by_ts[ts]
        for rid in p.holdings:
            t = trackers.get(rid)
            if t is None:
                t = trackers[rid] = IdleTrackerRow(
                    reservation_id=rid, node=node, seen_since=ts, last_seen=ts
                )
            elif ts > t.last_seen:
                if ts - t.last_seen > gap:
                    t.seen_since = ts
                t.last_seen = ts
            if rid in p.busy or p.uncertain:
                t.last_busy = ts if t.last_busy is None else max(t.last_busy, ts)
                busy.add(rid)
    for t in trackers.values():
        session.add(t)
    if busy:
        session.execute(
            update(IdleEpisodeRow)
            .where(
                col(IdleEpisodeRow.reservation_id).in_(sorted(busy)),
                col(IdleEpisodeRow.ended_at).is_(None),
            )
            .values(ended_at=now, end_reason="busy")
        )
    session.flush()
    if settings.idle_util_pct <= 0:
        return []
    window = timedelta(minutes=settings.idle_minutes)
    maybe = [rid for rid, t in trackers.items() if t.last_seen - _low_since(t) >= window]
    out = []
    for rid in sorted(maybe):  # one lock order for every push: no deadlock between nodes
        flagged = _evaluate(session, now, settings, rid, window)
        if flagged is not None:
            out.append(flagged)
    return out


def _evaluate(
    session: Session, now: datetime, settings: Settings, rid: int, window: timedelta
) -> Flagged | None:
    """Flag reservation ``rid`` if it is idle on all its nodes; the row lock makes pushes
    from its several nodes decide one at a time, so it is flagged once."""
    # The request first, then its reservation: the order every writer locks them in (a
    # cancel holds its request and then ends the reservation; the other order deadlocks).
    request_id = session.exec(
        select(ReservationRow.request_id).where(ReservationRow.id == rid)
    ).first()
    if request_id is None:
        return None
    session.get(RequestRow, request_id, with_for_update=True, populate_existing=True)
    res = session.exec(
        select(ReservationRow)
        .where(ReservationRow.id == rid)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if res is None or res.state != ReservationState.ACTIVE.value:
        return None
    open_episode = session.exec(
        select(IdleEpisodeRow.id).where(
            IdleEpisodeRow.reservation_id == rid, col(IdleEpisodeRow.ended_at).is_(None)
        )
    ).first()
    if open_episode is not None:
        return None
    nodes = set(
        session.exec(
            select(ReservationNodeRow.node).where(ReservationNodeRow.reservation_id == rid)
        )
    )
    trackers = [
        t
        for t in session.exec(
            select(IdleTrackerRow)
            .where(IdleTrackerRow.reservation_id == rid)
            .execution_options(populate_existing=True)
        )
        if t.node in nodes
    ]
    if not nodes or {t.node for t in trackers} != nodes:
        return None  # a node without samples: unknown there, so not idle
    as_of = min(t.last_seen for t in trackers)
    since = max(_low_since(t) for t in trackers)
    if as_of < now - window or as_of - since < window:
        return None
    try:
        with session.begin_nested():
            return _act(session, now, settings, res, since)
    except _Changed:
        return None


def _act(
    session: Session, now: datetime, settings: Settings, res: ReservationRow, since: datetime
) -> Flagged:
    req = session.get(RequestRow, res.request_id)
    if req is None or req.state != RequestState.ACTIVE.value:
        raise _Changed
    configured = settings.idle_action
    found = (
        f"Its {res.gpus} GPU(s) stayed below {settings.idle_util_pct:g}% utilisation for "
        f"{settings.idle_minutes:g} min (idle since {since:%Y-%m-%d %H:%M:%S} UTC)."
    )
    action, outcome = "none", "No action is configured."
    if configured == "end":
        action, outcome = "end", "The reservation is ended early; its GPUs are free."
    elif configured == "reclaimable":
        if not req.preemptible:
            outcome = "The request is not preemptible, so its GPUs stay guaranteed."
        else:
            action = "reclaimable"
            outcome = "Its GPUs may now be reclaimed for guaranteed demand."
    lifecycle.record_event(
        session,
        req.id or 0,
        now,
        "idle",
        f"{found} {outcome}",
        data={
            "reservation_id": res.id,
            "idle_since": since.isoformat(),
            "idle_util_pct": settings.idle_util_pct,
            "idle_minutes": settings.idle_minutes,
            "action": action,
        },
    )
    episode = IdleEpisodeRow(
        reservation_id=res.id or 0,
        request_id=res.request_id,
        tenant=res.tenant,
        gpu_class=res.gpu_class,
        gpus=res.gpus,
        idle_since=since,
        flagged_at=now,
        action=action,
    )
    if action == "end":
        if not lifecycle.transition(
            session,
            req,
            RequestState.EXPIRED,
            now,
            reason_code="idle_ended",
            message=f"Ended early because its GPUs were idle. {found}",
        ):
            raise _Changed
        end_active_reservation(session, req, now, "idle_ended")
        episode.ended_at, episode.end_reason = now, "reservation_ended"
    elif action == "reclaimable" and res.kind != ReservationKind.BORROWED.value:
        res.kind = ReservationKind.BORROWED.value
        res.updated_at = now
        session.add(res)
    session.add(episode)
    session.flush()
    return Flagged(
        reservation_id=res.id or 0,
        request_id=res.request_id,
        tenant=res.tenant,
        gpu_class=res.gpu_class,
        gpus=res.gpus,
        idle_since=since,
        action=action,
    )
