"""Promised starts: a request planned on guaranteed quota keeps its start or gets an earlier one.

A tenant plans around the start we show. The objective already charges a penalty for every
moved start, but a penalty can be outweighed; for work on guaranteed quota that is not good
enough. So a re-plan treats the previous plan's start of such a request as a hard limit,
expressed as a tighter deadline (``start <= promised``), which every planner already honours.

A promise is dropped only when something forces it:

- the request cannot be placed by its promised start any more (a node was lost, a quota was
  lowered, the previous start has passed): it is re-planned without its promise;
- a request of the same tenant and GPU class with a higher priority waits without a promise
  of its own: the tenant's own urgent work may go first.

Borrowed reservations make no promise: a guaranteed arrival may push them (the move penalty
still keeps them where they are when nothing better comes up).
"""

from __future__ import annotations

from dataclasses import replace

from solver.model import Plan, Problem, ReservationKind


def promised_starts(problem: Problem) -> dict[int, int]:
    """Request id -> the start it was promised, for the promises this re-plan must keep."""
    waiting = {r.id: r for r in problem.requests}
    unpromised_priority: dict[tuple[str, str], int] = {}
    candidates: dict[int, int] = {}
    for r in problem.requests:
        prev = problem.previous.get(r.id)
        firm = prev is not None and prev.kind is ReservationKind.GUARANTEED
        if prev is not None and firm and prev.start >= problem.now:
            candidates[r.id] = prev.start
        else:
            key = (r.tenant, r.gpu_class)
            unpromised_priority[key] = max(unpromised_priority.get(key, r.priority), r.priority)
    out = {}
    for rid, start in candidates.items():
        r = waiting[rid]
        urgent = unpromised_priority.get((r.tenant, r.gpu_class))
        if urgent is not None and urgent > r.priority:
            continue
        out[rid] = start
    return out


def with_promises(problem: Problem, promises: dict[int, int]) -> Problem:
    """``problem`` with each promised request's deadline tightened to its promised start, and
    held to guaranteed quota (an earlier start on borrowed GPUs would trade a firm promise for
    a reclaimable one)."""
    if not promises:
        return problem
    requests = []
    for r in problem.requests:
        start = promises.get(r.id)
        if start is not None:
            limit = start + r.duration_s
            deadline = limit if r.deadline is None else min(r.deadline, limit)
            r = replace(r, deadline=deadline, preemptible=False)
        requests.append(r)
    return replace(problem, requests=tuple(requests), promised=dict(promises))


def broken(plan: Plan, promises: dict[int, int]) -> list[int]:
    """Promised requests the plan left without a reservation."""
    return [rid for rid in promises if rid not in plan.assignments]
