"""A fast upper bound on a class's objective: a transportation relaxation solved as a
min-cost flow.

Relax the class to one divisible resource: the GPUs of its schedulable nodes minus running
work that cannot be reclaimed; let each request's energy (GPUs x duration) be spread over
time at a rate of at most its GPUs and interrupted at will. A request's value
``c * (H - s)`` equals ``c * (H + size/2 - M)`` for its mean busy time ``M``, so an upper bound
on the value is a lower bound on ``sum(c / energy * t)`` over the energy served at times
``t``: a transportation problem from requests to time buckets (the planning grid's slots, each
with the energy it can serve), plus an unlimited "after the horizon" sink that also stands for
requests a plan leaves out. What survives of the rules:

- capacity per bucket, and per (tenant, bucket) the tenant's limit beside its running work;
- windows: a request's arcs reach only buckets between its first start and latest end;
- budgets: a tenant whose requests exceed its budget must send the excess "beyond".

Every rounding (energies down, capacities up, costs down) only loosens the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from ortools.graph.python import min_cost_flow

from solver.cpsat.instance import ClassInstance, Segment, clip

# Flow unit: one GPU for one resolution unit, so that rate caps stay exact in short buckets
# (a coarser unit would round a one-GPU request's cap in a one-minute bucket up tenfold).
QUANTUM = 1
COST_SCALE = 100  # costs are integers: value per flow unit x 100, rounded down
I64 = npt.NDArray[np.int64]


@dataclass
class _Net:
    """Arcs collected in numpy chunks, handed to the solver in one call."""

    tails: list[I64] = field(default_factory=list)
    heads: list[I64] = field(default_factory=list)
    caps: list[I64] = field(default_factory=list)
    costs: list[I64] = field(default_factory=list)

    def arc(self, tail: int, head: int, cap: int, cost: int = 0) -> None:
        if cap > 0:
            self.bulk(tail, np.asarray([head]), np.asarray([cap]), np.asarray([cost]))

    def bulk(self, tail: int, heads: I64, caps: I64, costs: I64) -> None:
        self.tails.append(np.full(len(heads), tail, dtype=np.int64))
        self.heads.append(heads.astype(np.int64))
        self.caps.append(caps.astype(np.int64))
        self.costs.append(costs.astype(np.int64))

    def bulk_from(self, tails: I64, head: int, caps: I64) -> None:
        self.many(tails, np.full(len(tails), head, dtype=np.int64), caps)

    def many(self, tails: I64, heads: I64, caps: I64) -> None:
        keep = caps > 0
        self.tails.append(tails[keep].astype(np.int64))
        self.heads.append(heads[keep].astype(np.int64))
        self.caps.append(caps[keep].astype(np.int64))
        self.costs.append(np.zeros(int(keep.sum()), dtype=np.int64))

    def arrays(self) -> tuple[I64, I64, I64, I64]:
        return (
            np.concatenate(self.tails).astype(np.int32),
            np.concatenate(self.heads).astype(np.int32),
            np.concatenate(self.caps),
            np.concatenate(self.costs),
        )


def _energy(cap: int, fixed: list[Segment], h: int, edges: I64) -> I64:
    """Per bucket, ``cap`` minus the fixed usage, summed over the bucket's units (>= 0)."""
    used, _ = clip(fixed, 10**12)
    free = np.full(h, cap, dtype=np.int64)
    for a, b, amount in used:
        free[max(0, a) : min(h, b)] -= amount
    np.maximum(free, 0, out=free)
    cum = np.concatenate(([0], np.cumsum(free)))
    out: I64 = cum[edges[1:]] - cum[edges[:-1]]
    return out


def flow_bound(
    inst: ClassInstance,
    bucket_starts: list[int],
    resolution_s: int,
    max_arcs: int = 600_000,
) -> float | None:
    """Upper bound on ``sum(coef * earliness)`` over the items of ``inst``; ``None`` when the
    network would exceed ``max_arcs`` arcs. ``bucket_starts`` are the ascending start units of
    the grid's slots."""
    h = inst.horizon_units
    items = inst.items
    n = len(items)
    names = sorted(inst.tenants)
    starts = [u for u in bucket_starts if u < h]
    # Coarsen the buckets (every k-th boundary) until the network fits in max_arcs: coarser
    # buckets cost each request at an earlier moment, a looser but still valid bound.
    for k in (1, 2, 4, 8, 16, 32):
        edges = np.asarray([*starts[::k], h], dtype=np.int64)
        nb = len(edges) - 1
        first_b = np.searchsorted(edges, [it.domain[0] for it in items], "right") - 1
        last_end = [min(h, it.domain[-1] + it.size) for it in items]
        last_b = np.searchsorted(edges, last_end, "left")
        if int((last_b - first_b).sum()) + 3 * n + (len(names) + 2) * nb <= max_arcs:
            break
    else:
        return None

    # Node numbering.
    bucket0 = n
    tenant0 = bucket0 + nb
    beyond = tenant0 + len(names) * nb
    budget0 = beyond + 1
    sink = budget0 + len(names)
    tenant_index = {name: j for j, name in enumerate(names)}
    supplies = np.zeros(sink + 1, dtype=np.int64)
    net = _Net()

    for k, it in enumerate(items):
        energy = it.req.gpus * it.size
        q = energy // QUANTUM
        if q == 0:
            continue
        supplies[k] = q
        rate = COST_SCALE * it.coef * QUANTUM / energy  # scaled value per flow unit and unit
        j = tenant_index[it.req.tenant]
        span: I64 = np.arange(int(first_b[k]), int(last_b[k]), dtype=np.int64)
        begin: I64 = np.maximum(edges[span], it.domain[0])
        width: I64 = np.minimum(edges[span + 1], last_end[k]) - begin
        keep = width > 0
        span, begin, width = span[keep], begin[keep], width[keep]
        cost: I64 = (rate * begin).astype(np.int64)
        net.bulk(k, tenant0 + j * nb + span, -(-it.req.gpus * width // QUANTUM), cost)
        net.arc(k, budget0 + j, int(q), int(rate * h))

    all_b = np.arange(nb)
    net.bulk_from(
        bucket0 + all_b, sink, -(-_energy(inst.capacity, inst.fixed, h, edges) // QUANTUM)
    )
    for name in names:
        tp = inst.tenants[name]
        j = tenant_index[name]
        limit_energy = _energy(tp.limit, tp.fixed_all, h, edges)
        net.many(tenant0 + j * nb + all_b, bucket0 + all_b, -(-limit_energy // QUANTUM))
        # Budget: what does not fit must go beyond the horizon. A placed request's quanta are
        # at most GPUs x (duration / resolution + 1) / QUANTUM, hence the slack per request.
        own = [k for k in tp.items]
        total_q = int(sum(supplies[k] for k in own))
        demand = 0
        if tp.budget_gpu_s is not None:
            slack = sum(items[k].req.gpus for k in own)
            allowed = (tp.budget_gpu_s / resolution_s + slack) / QUANTUM
            demand = max(0, total_q - int(allowed) - 1)
        supplies[budget0 + j] = -demand
        net.arc(budget0 + j, beyond, total_q)
    total = int(supplies[:n].sum())
    net.arc(beyond, sink, total)
    supplies[sink] = -(total - int(-supplies[budget0:sink].sum()))

    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(*net.arrays())
    flow.set_nodes_supplies(np.arange(sink + 1, dtype=np.int32), supplies)
    if flow.solve() != flow.OPTIMAL:
        return None
    return float(
        sum(it.coef * (h + it.size / 2) for it in items) - flow.optimal_cost() / COST_SCALE
    )
