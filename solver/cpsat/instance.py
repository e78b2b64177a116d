"""Data prepared for the CP-SAT model of one GPU class: items, fixed usage, reclaimable tails.

Time is in resolution units after ``now`` (unit ``u`` is the ``u``-th fine slot; unit 0 is
``[now, first aligned boundary)``). Starts are restricted to the planning grid's boundaries,
so the model plans on the same grid as the greedy ledger. Running work is counted a little
short (its end is rounded down) and new work exactly, so every plan the ledger can make is a
solution of the model: the model is a relaxation of ledger-realisable plans, and its bound is
a valid bound for them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from solver.grid import TimeGrid
from solver.ledger import Ledger
from solver.model import Problem, Request, ReservationKind, Running
from solver.objective import Weights

Segment = tuple[int, int, int]  # start unit, end unit, amount


@dataclass(slots=True)
class Item:
    """A request in the model."""

    req: Request
    domain: list[int]  # allowed start units, ascending
    size: int  # units held (duration rounded up)
    coef: int  # objective per unit of earliness
    can_guarantee: bool
    can_borrow: bool
    big: int  # nodes it holds exclusively among big items (0 if not big)
    prev_unit: int | None
    move: int


@dataclass(slots=True)
class Tail:
    """The part of a running borrowed reservation that may be reclaimed: from ``start`` (the
    first allowed preemption unit) to ``end`` unless the plan ends it earlier."""

    run: Running
    start: int
    end: int
    gpus: int  # GPUs on schedulable nodes of the class
    big: int
    penalty: int


@dataclass(slots=True)
class TenantPart:
    """One tenant's quota in this class and its fixed running usage."""

    limit: int
    guaranteed: int
    budget_gpu_s: float | None
    items: list[int] = field(default_factory=list)
    fixed_all: list[Segment] = field(default_factory=list)
    fixed_guaranteed: list[Segment] = field(default_factory=list)
    tails: list[int] = field(default_factory=list)


@dataclass(slots=True)
class ClassInstance:
    """Everything the model of one class needs."""

    gpu_class: str
    horizon_units: int
    capacity: int  # GPUs on schedulable nodes
    nodes: int  # schedulable nodes (capacity of the big-item resource)
    node_size: int | None  # when all nodes have the same size
    items: list[Item]
    fixed: list[Segment]
    fixed_big: list[Segment]
    fixed_touched: list[Segment]  # schedulable nodes that running work holds (until reclaim)
    tails: list[Tail]
    tenants: dict[str, TenantPart]
    exact: bool = True  # False when running work over-uses a quota and reclaim is not modelled


def clip(segments: list[Segment], cap: int) -> tuple[list[Segment], bool]:
    """The step profile of ``segments`` as disjoint segments with levels clipped to ``cap``
    (work admitted earlier may exceed a lowered quota; the plan may then add nothing there),
    and whether clipping was needed."""
    events: dict[int, int] = {}
    for a, b, amount in segments:
        if b > a and amount:
            events[a] = events.get(a, 0) + amount
            events[b] = events.get(b, 0) - amount
    out: list[Segment] = []
    level = 0
    over = False
    times = sorted(events)
    for t0, t1 in itertools.pairwise(times):
        level += events[t0]
        if level > cap:
            over = True
        if level > 0:
            out.append((t0, t1, min(level, cap)))
    return out, over


def build_instances(
    problem: Problem, grid: TimeGrid, ledger: Ledger, weights: Weights, eligible: list[Request]
) -> dict[str, ClassInstance]:
    """One instance per class that has eligible requests (those passing the static checks)."""
    now, res = problem.now, problem.resolution_s
    horizon = weights.horizon_units
    units = [grid.units(int(b)) for b in grid.bounds[: grid.n_starts]]

    def floor_units(t: int) -> int:
        return max(0, (t - now) // res)

    out: dict[str, ClassInstance] = {}
    by_class: dict[str, list[Request]] = {}
    for r in eligible:
        by_class.setdefault(r.gpu_class, []).append(r)
    for cls, reqs in by_class.items():
        pool = ledger.pools[cls]
        sched_caps = [int(c) for c, s in zip(pool.caps, pool.sched, strict=True) if s]
        sizes = set(sched_caps)
        node_size = sizes.pop() if len(sizes) == 1 else None
        sched_names = {n for n, s in zip(pool.nodes, pool.sched, strict=True) if s}
        tenants: dict[str, TenantPart] = {}

        def part(name: str, cls: str = cls, tenants: dict[str, TenantPart] = tenants) -> TenantPart:
            if name not in tenants:
                tenant = problem.tenants.get(name)
                quota = tenant.quotas.get(cls) if tenant else None
                tenants[name] = TenantPart(
                    limit=quota.limit if quota else 0,
                    guaranteed=quota.guaranteed if quota else 0,
                    budget_gpu_s=quota.budget_gpu_s if quota else None,
                )
            return tenants[name]

        fixed: list[Segment] = []
        fixed_big: list[Segment] = []
        touched_until: dict[str, int] = {}
        per_node: dict[str, list[Segment]] = {}
        tails: list[Tail] = []
        for run in problem.running:
            if run.gpu_class != cls:
                continue
            end = floor_units(run.end)
            gpus = sum(g for n, g in run.allocation if n in sched_names)
            big = 0
            if node_size is not None:
                big = sum(1 for n, g in run.allocation if n in sched_names and 2 * g > node_size)
            tp = part(run.tenant)
            cut = end
            if run.kind is ReservationKind.BORROWED and run.preemptible:
                earliest = max(now, run.start + problem.min_runtime_s)
                first = grid.first_start_at_or_after(earliest)
                if first < grid.n_starts:
                    cut = min(end, grid.units(int(grid.bounds[first])))
            if cut < end:
                tails.append(Tail(run, cut, end, gpus, big, weights.preemption(run)))
                tp.tails.append(len(tails) - 1)
            for n, g in run.allocation:
                if n in sched_names:
                    touched_until[n] = max(touched_until.get(n, 0), cut)
                    per_node.setdefault(n, []).append((0, end, g))
            fixed.append((0, cut, gpus))
            fixed_big.append((0, cut, big))
            tp.fixed_all.append((0, cut, run.gpus))
            if run.kind is ReservationKind.GUARANTEED:
                tp.fixed_guaranteed.append((0, end, run.gpus))

        items: list[Item] = []
        for r in reqs:
            quota = problem.tenants[r.tenant].quotas[cls]
            first = grid.first_start_at_or_after(max(now, r.not_before or now))
            latest = grid.n_starts
            if r.deadline is not None:
                latest = min(latest, grid.first_start_at_or_after(r.deadline - r.duration_s + 1))
            domain = units[first:latest]
            if not domain:
                continue
            prev = problem.previous.get(r.id)
            prev_unit = None
            if prev is not None:
                pu = grid.units(prev.start)
                j = grid.first_start_at_or_after(prev.start)
                if j < grid.n_starts and int(grid.bounds[j]) == prev.start and pu in domain:
                    prev_unit = pu
            can_g = r.gpus <= quota.guaranteed
            big = 0
            if node_size is not None and 2 * r.gpus_per_node > node_size:
                big = r.nodes_needed
            items.append(
                Item(
                    req=r,
                    domain=domain,
                    size=-(-r.duration_s // res),
                    coef=weights.coefficient(r.id),
                    can_guarantee=can_g,
                    can_borrow=r.preemptible,
                    big=big,
                    prev_unit=prev_unit,
                    move=weights.move(r.id) if prev is not None else 0,
                )
            )
            part(r.tenant).items.append(len(items) - 1)
        out[cls] = ClassInstance(
            gpu_class=cls,
            horizon_units=horizon,
            capacity=sum(sched_caps),
            nodes=len(sched_caps),
            node_size=node_size,
            items=items,
            fixed=fixed,
            fixed_big=fixed_big,
            fixed_touched=[(0, end, 1) for end in touched_until.values()],
            tails=tails,
            tenants=tenants,
        )
        caps = dict(zip(pool.nodes, (int(c) for c in pool.caps), strict=True))
        if any(clip(segs, caps[n])[1] for n, segs in per_node.items()):
            # A node holds more running work than it has GPUs (it shrank): count each node's
            # running work up to its size, and model no reclaim (the bound is then dropped).
            _settle_tails(out[cls], force=True)
            out[cls].fixed = [seg for n, segs in per_node.items() for seg in clip(segs, caps[n])[0]]
        else:
            _settle_tails(out[cls])
    return out


def _settle_tails(inst: ClassInstance, force: bool = False) -> None:
    """Where running work already over-uses capacity or a limit (a node or a quota shrank),
    the model would force reclaims the planners never make; count such tails as fixed."""
    full = [(t.start, t.end, t.gpus) for t in inst.tails]
    over = clip(inst.fixed + full, inst.capacity)[1]
    for tp in inst.tenants.values():
        if not tp.items:
            continue  # no limit constraint is built for a tenant with nothing to place
        mine = [(inst.tails[k].start, inst.tails[k].end, inst.tails[k].run.gpus) for k in tp.tails]
        over = over or clip(tp.fixed_all + mine, tp.limit)[1]
    if not over and not force:
        return
    inst.exact = False
    inst.fixed.extend(full)
    inst.fixed_big.extend((t.start, t.end, t.big) for t in inst.tails)
    for tp in inst.tenants.values():
        tp.fixed_all.extend(
            (inst.tails[k].start, inst.tails[k].end, inst.tails[k].run.gpus) for k in tp.tails
        )
        tp.tails.clear()
    inst.tails.clear()
