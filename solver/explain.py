"""Why a request has no reservation: the most accurate :class:`~solver.model.Reason`, a short
detail, the earliest start when one is known, and what blocks it as ``(kind, name)`` pairs.

Blocking kinds: ``("class", C)`` the GPU class, ``("quota", "limit" | "guaranteed" |
"budget")`` the tenant's own quota, ``("node", N)`` a draining node, ``("tenant", T)`` a tenant
whose reservations hold the GPUs the request needs (most GPUs first, at most five).

:func:`static_reason` needs no search (shape, quota, window, budget); :func:`explain` runs
relaxed searches after the real one failed, to tell capacity, limit, deadline and "waiting
behind requests placed before it" apart.
"""

from __future__ import annotations

import numpy as np

from solver.ledger import Ledger
from solver.model import Reason, Request, Unplaced

MAX_BLOCKERS = 5


def _gh(gpu_s: float) -> str:
    return f"{gpu_s / 3600:.1f} GPU-h"


def static_reason(ledger: Ledger, req: Request) -> Unplaced | None:
    """The reason ``req`` cannot be placed whatever the others do, or ``None``."""
    problem = ledger.problem
    cls = req.gpu_class
    pool = ledger.pools.get(cls)
    if pool is None:
        return Unplaced(
            req.id,
            Reason.NO_SUCH_GPU_CLASS,
            f"the pool has no {cls} nodes",
            None,
            (("class", cls),),
        )
    quota = problem.tenants[req.tenant].quotas.get(cls)
    if quota is None:
        return Unplaced(
            req.id,
            Reason.QUOTA_EXHAUSTED,
            f"tenant {req.tenant} has no quota for {cls}",
            None,
            (("quota", "limit"),),
        )
    if req.gpus > quota.limit:
        return Unplaced(
            req.id,
            Reason.QUOTA_EXHAUSTED,
            f"asks {req.gpus} GPUs, the limit for {cls} is {quota.limit}",
            None,
            (("quota", "limit"),),
        )
    if not req.preemptible and req.gpus > quota.guaranteed:
        return Unplaced(
            req.id,
            Reason.NOT_PREEMPTIBLE_NO_GUARANTEE,
            f"not preemptible and asks {req.gpus} GPUs, guaranteed quota is {quota.guaranteed}",
            None,
            (("quota", "guaranteed"),),
        )
    p, k = req.gpus_per_node, req.nodes_needed
    big = pool.caps >= p
    if int(big.sum()) < k:
        return Unplaced(
            req.id,
            Reason.TOO_LARGE_FOR_POOL,
            f"needs {k} nodes with {p} GPUs each, the pool has {int(big.sum())}",
            None,
            (("class", cls),),
        )
    if int((big & pool.sched).sum()) < k:
        draining = [pool.nodes[i] for i in np.nonzero(big & ~pool.sched)[0]]
        return Unplaced(
            req.id,
            Reason.NODES_DRAINING,
            f"needs {k} nodes with {p} GPUs each, {len(draining)} of them are draining",
            None,
            tuple(("node", n) for n in draining),
        )
    earliest = max(problem.now, req.not_before or problem.now)
    if earliest >= ledger.grid.horizon_end:
        return Unplaced(
            req.id,
            Reason.BEYOND_HORIZON,
            "not_before lies beyond the planning horizon",
            ledger.grid.bounds[ledger.grid.first_start_at_or_after(earliest)].item()
            if ledger.grid.first_start_at_or_after(earliest) < len(ledger.grid.bounds)
            else earliest,
        )
    if req.deadline is not None and earliest + req.duration_s > req.deadline:
        return Unplaced(
            req.id,
            Reason.DEADLINE_UNREACHABLE,
            "cannot end by its deadline even if it started at once",
        )
    left = ledger.budget_left(req.tenant, cls)
    if left is not None and req.gpus * req.duration_s > left:
        spent = (quota.budget_gpu_s or 0.0) - left
        detail = f"needs {_gh(req.gpus * req.duration_s)}, {_gh(max(left, 0.0))} of budget left"
        if spent > 0:
            detail += f" after {_gh(spent)} planned for its other requests"
        return Unplaced(req.id, Reason.BUDGET_EXHAUSTED, detail, None, (("quota", "budget"),))
    return None


def _tenants(held: list[tuple[str, int]]) -> tuple[tuple[str, str], ...]:
    return tuple(("tenant", t) for t, _ in held[:MAX_BLOCKERS])


def explain(ledger: Ledger, req: Request) -> Unplaced:
    """The reason the (failed) search found no start for ``req`` inside the horizon."""
    grid = ledger.grid
    quota = ledger.problem.tenants[req.tenant].quotas[req.gpu_class]
    only_g = not req.preemptible
    common = {
        "guaranteed": only_g,
        "limit": quota.limit,
        "guaranteed_cap": quota.guaranteed,
    }
    beyond = ledger.search(req, hi=grid.n_slots, deadline=False, **common)  # type: ignore[arg-type]
    earliest = int(grid.bounds[beyond.slot]) if beyond is not None else None
    first = grid.first_start_at_or_after(max(grid.now, req.not_before or grid.now))
    if req.deadline is not None:
        inside = ledger.search(req, deadline=False, **common)  # type: ignore[arg-type]
        if inside is not None:
            held = ledger.blockers(req, first, running_only=False)
            return Unplaced(
                req.id,
                Reason.DEADLINE_UNREACHABLE,
                "the GPUs it needs are taken until too late to end by its deadline",
                earliest,
                _tenants(held),
            )
    quota_only = ledger.search(req, capacity=False, deadline=False, **common)  # type: ignore[arg-type]
    if quota_only is None:
        which = "guaranteed" if only_g else "limit"
        cap = quota.guaranteed if only_g else quota.limit
        return Unplaced(
            req.id,
            Reason.QUOTA_EXHAUSTED,
            f"the tenant's own reservations fill its {which} of {cap} GPUs over the horizon",
            earliest,
            (("quota", which), ("tenant", req.tenant)),
        )
    behind = ledger.search(req, running_only=True, deadline=False, **common)  # type: ignore[arg-type]
    if behind is not None:
        held = ledger.blockers(req, behind.slot, running_only=False, planned_only=True)
        return Unplaced(
            req.id,
            Reason.WAITING_FOR_HIGHER_PRIORITY,
            "requests placed before it hold the GPUs it needs",
            earliest,
            _tenants(held),
        )
    held = ledger.blockers(req, first, running_only=True)
    return Unplaced(
        req.id,
        Reason.CAPACITY_BUSY,
        "running reservations hold the GPUs it needs through the horizon",
        earliest,
        _tenants(held),
    )
