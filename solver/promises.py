"""Promised starts: a request planned on guaranteed quota keeps its start or gets an earlier one.

A tenant plans around the start we show. The objective already charges a penalty for every
moved start, but a penalty can be outweighed; for work on guaranteed quota that is not good
enough. So a re-plan treats the previous plan's start of such a request as a hard limit,
expressed as a tighter deadline (``start <= promised``), which every planner already honours.

The scheduler stores the promise with the request, so it survives a plan that starts the
request earlier on borrowed GPUs (work-conserving: idle GPUs are used at once); a later plan
may move it again, but never past the promise. A promise is dropped only when something
forces it:

- the request cannot be placed by its promised start any more (a node was lost, a quota was
  lowered): it is re-planned without its promise; a promised time that has passed (the
  cycle came late) means "start now", and is dropped only if that is impossible;
- a request of the same tenant and GPU class with a higher priority waits without a promise
  of its own: the tenant's own urgent work may go first.

Borrowed reservations make no promise: a guaranteed arrival may push them (the move penalty
still keeps them where they are when nothing better comes up).
"""

from __future__ import annotations

from dataclasses import replace

from solver.model import Plan, Problem, ReservationKind


def promised_starts(problem: Problem) -> dict[int, int]:
    """Request id -> the latest start this re-plan may give it: the promises the scheduler
    remembers (``problem.promised``) and the previous plan's starts on guaranteed quota (at
    the earliest ``now``), less those the tenant's own more urgent work may take."""
    candidates: dict[int, int] = {}
    unpromised_priority: dict[tuple[str, str], int] = {}
    for r in problem.requests:
        prev = problem.previous.get(r.id)
        starts = [problem.promised[r.id]] if r.id in problem.promised else []
        if prev is not None and prev.kind is ReservationKind.GUARANTEED:
            starts.append(prev.start)
        # A promise whose time has come (the cycle ran late) means: start now.
        starts = [max(t, problem.now) for t in starts]
        if starts:
            candidates[r.id] = min(starts)
        else:
            key = (r.tenant, r.gpu_class)
            unpromised_priority[key] = max(unpromised_priority.get(key, r.priority), r.priority)
    waiting = {r.id: r for r in problem.requests}
    out = {}
    for rid, start in candidates.items():
        r = waiting[rid]
        urgent = unpromised_priority.get((r.tenant, r.gpu_class))
        if urgent is not None and urgent > r.priority:
            continue
        out[rid] = start
    return out


def with_promises(problem: Problem, promises: dict[int, int]) -> Problem:
    """``problem`` with each promised request's deadline tightened to its promised start
    (it may still start earlier, on guaranteed or on borrowed GPUs)."""
    requests = []
    for r in problem.requests:
        start = promises.get(r.id)
        if start is not None:
            limit = start + r.duration_s
            if r.deadline is None or limit < r.deadline:
                r = replace(r, deadline=limit)
        requests.append(r)
    return replace(problem, requests=tuple(requests), promised=dict(promises))


def broken(plan: Plan, promises: dict[int, int]) -> list[int]:
    """Promised requests the plan left without a reservation."""
    return [rid for rid in promises if rid not in plan.assignments]
