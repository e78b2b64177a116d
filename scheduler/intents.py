"""What a plan asks of each waiting request, decided from the snapshot alone.

:func:`prepare` turns a validated plan into one :class:`Intent` per waiting request: its
guarded request change and the reservation to write with it. It reads nothing, so the cycle
runs it before its write transaction; :func:`scheduler.apply.apply_plan` then only checks
versions and free GPUs and sends the writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

import solver
from scheduler import lifecycle, reasons
from scheduler.clock import from_epoch
from scheduler.domain import RequestState, ReservationState
from scheduler.snapshot import RequestRef, Snapshot

#: An ETA that moves less than this is not reported as a change.
ETA_TOLERANCE = timedelta(seconds=60)


class Outcome(Enum):
    ACTIVATE = "activate"
    PLAN = "plan"
    WAIT = "wait"
    REJECT = "reject"


@dataclass(slots=True)
class Intent:
    """What a plan asks of one waiting request: its guarded change (``None``: nothing to
    write), and the reservation written once the change lands (``reservation``: its state;
    ``existing``: the id of the planned reservation it has now, if any)."""

    ref: RequestRef
    outcome: Outcome
    change: lifecycle.Change | None
    assignment: solver.Assignment | None = None
    reservation: ReservationState | None = None
    existing: int | None = None


@dataclass
class Prepared:
    """A plan turned into writes, ready to apply (:func:`prepare`), or one part of them
    (:func:`split`); only the ``first`` part writes the plan's preemptions and reclaims."""

    snap: Snapshot
    plan: solver.Plan
    now: datetime
    intents: list[Intent]
    first: bool = True


def _adds(it: Intent) -> bool:
    """A new planned reservation for a request that holds none: adding it to a stored plan
    that is already part of this plan keeps the stored plan part of this plan."""
    return (
        it.outcome is Outcome.PLAN
        and it.existing is None
        and it.reservation is ReservationState.PLANNED
    )


def split(prepared: Prepared, size: int) -> list[Prepared]:
    """The writes in parts of about ``size`` new reservations, each for its own transaction,
    so that no single write transaction holds SQLite's write lock for long.

    The first part holds everything that moves, opens, drops or preempts; the later parts only
    add new planned reservations. After each part, the stored plan is part of the new plan
    (the first part brings every stored reservation to where the new plan has it), so it
    never double-books between parts."""
    adds: list[Intent] = []
    rest: list[Intent] = []
    for it in prepared.intents:
        (adds if _adds(it) else rest).append(it)
    head = replace(prepared, intents=rest + adds[:size])
    tail = [
        replace(prepared, intents=adds[i : i + size], first=False)
        for i in range(size, len(adds), size)
    ]
    return [head, *tail]


def prepare(snap: Snapshot, plan: solver.Plan, now: datetime) -> Prepared:
    """Decide every waiting request's write from the snapshot and the plan, at time ``now``.

    Reads nothing: the cycle runs it before it takes the write lock, so the write
    transaction only checks versions and sends the writes."""
    intents: list[Intent] = []

    def existing(rid: int) -> int | None:
        held = snap.planned.get(rid)
        return held.reservation_id if held else None

    # Openings first, earliest start first, so that if any is refused it is the later ones.
    for rid, a in sorted(plan.assignments.items(), key=lambda kv: (kv[1].start, kv[0])):
        req = snap.refs.get(rid)
        if req is None:
            continue
        held = snap.planned.get(rid)
        start, end = from_epoch(a.start), from_epoch(a.end)
        sentence = reasons.planned_sentence(start, end, a.kind.value, now)
        # Due now: the plan's own "now" is the next whole second after its snapshot.
        if a.start <= snap.problem.now or start <= now:
            change = lifecycle.transition_change(
                req,
                RequestState.ACTIVE,
                now,
                reason_code=None,
                message=sentence,
                values={
                    "planned_start": start,
                    "planned_end": end,
                    "started_at": start,
                    "first_planned_start": req.first_planned_start or start,
                },
                data={"allocation": dict(a.allocation), "kind": a.kind.value},
            )
            intents.append(
                Intent(req, Outcome.ACTIVATE, change, a, ReservationState.ACTIVE, existing(rid))
            )
            continue
        values = {
            "planned_start": start,
            "planned_end": end,
            "promised_start": _promise(req.promised_start, start, a.kind),
        }
        changed = held is None or held.assignment != a
        if req.state == RequestState.PENDING.value:
            change = lifecycle.transition_change(
                req,
                RequestState.PLANNED,
                now,
                reason_code=reasons.PLANNED,
                message=sentence,
                values={**values, "first_planned_start": req.first_planned_start or start},
                data={"planned_start": start.isoformat()},
            )
        else:
            moved = req.planned_start is None or abs(req.planned_start - start) >= ETA_TOLERANCE
            change = lifecycle.touch_change(
                req,
                now,
                {**values, "reason_code": reasons.PLANNED, "reason_message": sentence},
                event="eta" if moved else None,
                message=f"Planned start moved to {start:%Y-%m-%d %H:%M:%S} UTC",
                data={
                    "from": req.planned_start.isoformat() if req.planned_start else None,
                    "to": start.isoformat(),
                },
                force=changed,  # a reservation is about to be written: prove the row is fresh
            )
        state = ReservationState.PLANNED if changed else None
        intents.append(Intent(req, Outcome.PLAN, change, a, state, existing(rid)))

    waits = [
        (rid, u.reason.value, reasons.unplaced_sentence(u, snap.contexts[rid]))
        for rid, u in plan.unplaced.items()
    ] + [(rid, code, message) for rid, (code, message) in snap.deferred.items()]
    for rid, code, message in waits:
        req = snap.refs.get(rid)
        if req is not None:
            change = _pending_change(req, now, code, message)
            intents.append(Intent(req, Outcome.WAIT, change, existing=existing(rid)))
    for rid, rejection in snap.rejections.items():
        req = snap.refs.get(rid)
        if req is not None:
            change = lifecycle.transition_change(
                req,
                RequestState.REJECTED,
                now,
                reason_code=rejection.code,
                message=rejection.message,
            )
            intents.append(Intent(req, Outcome.REJECT, change, existing=existing(rid)))
    return Prepared(snap, plan, now, intents)


def _pending_change(
    req: RequestRef, now: datetime, code: str, message: str
) -> lifecycle.Change | None:
    """The request waits with a reason (``None``: it already does, with this reason)."""
    if req.state == RequestState.PLANNED.value:
        return lifecycle.transition_change(
            req, RequestState.PENDING, now, reason_code=code, message=message
        )
    changed = req.reason_code != code
    return lifecycle.touch_change(
        req,
        now,
        {"reason_code": code, "reason_message": message},
        event="reason" if changed else None,
        message=message,
        data={"reason": code},
    )


def _promise(
    promised: datetime | None, start: datetime, kind: solver.ReservationKind
) -> datetime | None:
    """The promise after planning ``start``: a start on guaranteed quota is the new promise
    (the planner moves one later only when forced); a borrowed start keeps the promise it
    does not break (it starts earlier) and ends one it does."""
    if kind is solver.ReservationKind.GUARANTEED:
        return start
    return promised if promised is not None and start <= promised else None
