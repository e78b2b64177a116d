"""Slotted bookkeeping of who holds which GPUs when, and the search for the earliest start.

The greedy planner and the CP-SAT plan realiser both place requests through a
:class:`Ledger`. It keeps, on the :class:`~solver.grid.TimeGrid`, the GPUs used per node and
slot, per tenant and class (all and guaranteed), the budget left, and the running borrowed
reservations that may be reclaimed. Searches are vectorised over slots with numpy: 1-D
window tests on the tenant and on a per-class "nodes with p GPUs free" count prune the start
candidates, and only surviving candidates are tested node by node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from solver.grid import IntArray, TimeGrid
from solver.model import Problem, Request, ReservationKind, Running

I32 = npt.NDArray[np.int32]
Bool = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Record:
    """A running reservation in the ledger, for reclaim (who holds what is in :class:`Holds`)."""

    rid: int
    tenant: str
    nodes: list[tuple[int, int]]  # (node index in its class, GPUs)
    b: int  # first slot no longer held
    reclaim_slot: int | None = None  # reclaimable from this start boundary on (borrowed runs)
    preempted_at: int | None = None  # start boundary at which the plan ends it


class Holds:
    """Who holds GPUs on which node over which slots, one row per reservation and node, in
    growing numpy columns: explanations sum them per tenant without a Python loop."""

    __slots__ = ("_ix", "a", "end", "gpus", "n", "node", "rid", "running", "tenant", "tenants")

    def __init__(self) -> None:
        self.n = 0
        self.rid = np.zeros(64, dtype=np.int64)
        self.node = np.zeros(64, dtype=np.int64)
        self.gpus = np.zeros(64, dtype=np.int64)
        self.a = np.zeros(64, dtype=np.int64)
        self.end = np.zeros(64, dtype=np.int64)
        self.tenant = np.zeros(64, dtype=np.int64)
        self.running = np.zeros(64, dtype=np.bool_)
        self.tenants: list[str] = []
        self._ix: dict[str, int] = {}

    def add(
        self, rid: int, tenant: str, nodes: list[tuple[int, int]], a: int, b: int, running: bool
    ) -> None:
        """Reservation ``rid`` of ``tenant`` holds ``nodes`` (index, GPUs) over slots [a, b)."""
        m = len(nodes)
        if self.n + m > len(self.rid):
            size = max(2 * len(self.rid), self.n + m)
            for name in ("rid", "node", "gpus", "a", "end", "tenant", "running"):
                old = getattr(self, name)
                new = np.zeros(size, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        t = self._ix.setdefault(tenant, len(self.tenants))
        if t == len(self.tenants):
            self.tenants.append(tenant)
        rows = slice(self.n, self.n + m)
        self.rid[rows] = rid
        self.node[rows] = [i for i, _ in nodes]
        self.gpus[rows] = [g for _, g in nodes]
        self.a[rows] = a
        self.end[rows] = b
        self.tenant[rows] = t
        self.running[rows] = running
        self.n += m

    def cut(self, rid: int, slot: int) -> None:
        """The reservation ``rid`` now ends at ``slot`` (preempted)."""
        n = self.n
        self.end[:n][self.rid[:n] == rid] = slot


@dataclass(slots=True)
class ClassPool:
    """Nodes of one GPU class and their slot usage."""

    name: str
    nodes: list[str]
    caps: I32
    sched: Bool
    used: I32  # (nodes, slots): all reservations
    used_run: I32  # (nodes, slots): running reservations only (for explanations)
    recl: I32  # (nodes, slots): GPUs held by reservations reclaimable there
    holds: Holds = field(default_factory=Holds)  # every reservation, for explanations
    counts: dict[int, I32] = field(default_factory=dict)  # p -> schedulable nodes with p free
    victims: dict[int, list[Record]] = field(default_factory=dict)  # node -> reclaimable runs

    def count(self, p: int) -> I32:
        """Per slot, how many schedulable nodes have ``p`` GPUs free (cached, kept current)."""
        c = self.counts.get(p)
        if c is None:
            free = self.caps[:, None] - self.used
            c = ((free >= p) & self.sched[:, None]).sum(axis=0).astype(np.int32)
            self.counts[p] = c
        return c

    def change(self, rows: list[int], a: int, b: int, delta: I32 | int) -> None:
        """Add ``delta`` GPUs to ``rows`` over slots ``[a, b)``, keeping the counts current."""
        if b <= a or not rows:
            return
        idx = np.asarray(rows)
        caps = self.caps[idx, None]
        sched = self.sched[idx, None]
        before = caps - self.used[idx, a:b]
        self.used[idx, a:b] += delta
        after = caps - self.used[idx, a:b]
        for p, c in self.counts.items():
            c[a:b] += ((after >= p) & sched).sum(axis=0) - ((before >= p) & sched).sum(axis=0)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and when a request goes, and which running reservations it reclaims."""

    req: Request
    slot: int  # start boundary index
    nodes: tuple[int, ...]
    kind: ReservationKind
    preempt: tuple[int, ...] = ()  # request ids of running reservations ended at the start


def _window_ok(bad: Bool, starts: IntArray, ends: IntArray) -> Bool:
    """For each start, whether no slot in ``[start, end)`` is ``bad``."""
    cum = np.concatenate(([0], np.cumsum(bad, dtype=np.int64)))
    ok: Bool = (cum[ends] - cum[starts]) == 0
    return ok


class Ledger:
    """Usage on the grid, built from a problem's nodes, quotas and running reservations."""

    def __init__(self, problem: Problem, grid: TimeGrid) -> None:
        self.problem = problem
        self.grid = grid
        s = grid.n_slots
        by_class: dict[str, list[tuple[str, int, bool]]] = {}
        for node in sorted(problem.nodes, key=lambda n: n.name):
            by_class.setdefault(node.gpu_class, []).append((node.name, node.gpus, node.schedulable))
        self.pools: dict[str, ClassPool] = {}
        self.where: dict[str, tuple[str, int]] = {}
        for cls, rows in by_class.items():
            n = len(rows)
            self.pools[cls] = ClassPool(
                name=cls,
                nodes=[r[0] for r in rows],
                caps=np.asarray([r[1] for r in rows], dtype=np.int32),
                sched=np.asarray([r[2] for r in rows], dtype=np.bool_),
                used=np.zeros((n, s), dtype=np.int32),
                used_run=np.zeros((n, s), dtype=np.int32),
                recl=np.zeros((n, s), dtype=np.int32),
            )
            for i, r in enumerate(rows):
                self.where[r[0]] = (cls, i)
        self.total: dict[tuple[str, str], I32] = {}
        self.guar: dict[tuple[str, str], I32] = {}
        self.budget: dict[tuple[str, str], float | None] = {}
        for name, tenant in problem.tenants.items():
            for cls, quota in tenant.quotas.items():
                self.budget[(name, cls)] = quota.budget_gpu_s
        self.runs: dict[int, Record] = {}
        self._live_reclaimable: dict[str, int] = {}
        self.run_class: dict[int, str] = {r.request_id: r.gpu_class for r in problem.running}
        self._ends: dict[int, IntArray] = {}
        self.version = 0  # counts commits: equal versions mean equal usage
        for run in problem.running:
            self._add_running(run)

    # -- bookkeeping ---------------------------------------------------------------------

    def tenant_arrays(self, tenant: str, cls: str) -> tuple[I32, I32]:
        key = (tenant, cls)
        if key not in self.total:
            self.total[key] = np.zeros(self.grid.n_slots, dtype=np.int32)
            self.guar[key] = np.zeros(self.grid.n_slots, dtype=np.int32)
        return self.total[key], self.guar[key]

    def _add_running(self, run: Running) -> None:
        a, b = self.grid.slot_span(run.start, run.end)
        rows: dict[str, list[tuple[int, int]]] = {}
        for node_name, gpus in run.allocation:
            if node_name in self.where:
                cls, i = self.where[node_name]
                rows.setdefault(cls, []).append((i, gpus))
        total, guar = self.tenant_arrays(run.tenant, run.gpu_class)
        total[a:b] += run.gpus
        if run.kind is ReservationKind.GUARANTEED:
            guar[a:b] += run.gpus
        reclaimable = run.kind is ReservationKind.BORROWED and run.preemptible
        reclaim_slot = None
        if reclaimable:
            earliest = max(self.problem.now, run.start + self.problem.min_runtime_s)
            reclaim_slot = self.grid.first_start_at_or_after(earliest)
        for cls, nodes in rows.items():
            pool = self.pools[cls]
            rec = Record(run.request_id, run.tenant, nodes, b, reclaim_slot=reclaim_slot)
            pool.holds.add(run.request_id, run.tenant, nodes, a, b, running=True)
            for i, gpus in nodes:
                pool.used[i, a:b] += gpus
                pool.used_run[i, a:b] += gpus
                if reclaim_slot is not None and reclaim_slot < b:
                    pool.recl[i, reclaim_slot:b] += gpus
                    pool.victims.setdefault(i, []).append(rec)
            if cls == run.gpu_class:
                self.runs[run.request_id] = rec
                if reclaim_slot is not None and reclaim_slot < b:
                    self._live_reclaimable[cls] = self._live_reclaimable.get(cls, 0) + 1

    def ends(self, duration_s: int) -> IntArray:
        """First slot after a reservation of ``duration_s`` starting at each boundary."""
        e = self._ends.get(duration_s)
        if e is None:
            starts = self.grid.bounds[:-1]
            e = np.minimum(
                np.searchsorted(self.grid.bounds, starts + duration_s, side="left"),
                self.grid.n_slots,
            ).astype(np.int64)
            self._ends[duration_s] = e
        return e

    def reclaimable(self, cls: str) -> bool:
        """Whether any running reservation of class ``cls`` may still be reclaimed."""
        return self._live_reclaimable.get(cls, 0) > 0

    def budget_left(self, tenant: str, cls: str) -> float | None:
        return self.budget.get((tenant, cls))

    def commit(self, pl: Placement) -> None:
        """Book a placement (and end the running reservations it reclaims)."""
        req = pl.req
        pool = self.pools[req.gpu_class]
        self.version += 1
        for rid in pl.preempt:
            self._preempt(rid, pl.slot)
        a = pl.slot
        b = int(self.ends(req.duration_s)[a])
        pool.change(list(pl.nodes), a, b, req.gpus_per_node)
        total, guar = self.tenant_arrays(req.tenant, req.gpu_class)
        total[a:b] += req.gpus
        if pl.kind is ReservationKind.GUARANTEED:
            guar[a:b] += req.gpus
        key = (req.tenant, req.gpu_class)
        left = self.budget.get(key)
        if left is not None:
            self.budget[key] = left - req.gpus * req.duration_s
        nodes = [(i, req.gpus_per_node) for i in pl.nodes]
        pool.holds.add(req.id, req.tenant, nodes, a, b, running=False)

    def _preempt(self, rid: int, slot: int) -> None:
        rec = self.runs[rid]
        if rec.preempted_at is not None or rec.reclaim_slot is None:
            raise ValueError(f"running reservation {rid} cannot be preempted again")
        cls = self.run_class[rid]
        pool = self.pools[cls]
        for i, gpus in rec.nodes:
            pool.change([i], slot, rec.b, -gpus)
            pool.used_run[i, slot : rec.b] -= gpus
            pool.recl[i, rec.reclaim_slot : rec.b] -= gpus
        total, _ = self.tenant_arrays(rec.tenant, cls)
        total[slot : rec.b] -= sum(g for _, g in rec.nodes)
        rec.preempted_at = slot
        pool.holds.cut(rid, slot)
        self._live_reclaimable[cls] -= 1

    # -- search --------------------------------------------------------------------------

    def search(
        self,
        req: Request,
        *,
        guaranteed: bool,
        reclaim: bool = False,
        lo: int | None = None,
        hi: int | None = None,
        limit: int | None = None,
        guaranteed_cap: int | None = None,
        deadline: bool = True,
        capacity: bool = True,
        running_only: bool = False,
        prefer: frozenset[str] = frozenset(),
    ) -> Placement | None:
        """The earliest placement of ``req`` with start boundary in ``[lo, hi)``.

        ``guaranteed`` keeps the tenant's guaranteed reservations within ``guaranteed_cap``;
        ``reclaim`` lets the placement end running borrowed reservations of other tenants
        (only ones past their minimum runtime). The switches ``deadline``, ``capacity`` and
        ``running_only`` relax rules, for explaining why a request cannot be placed.
        """
        grid = self.grid
        pool = self.pools.get(req.gpu_class)
        if pool is None:
            return None
        first = grid.first_start_at_or_after(max(grid.now, req.not_before or grid.now))
        lo = first if lo is None else max(lo, first)
        hi = grid.n_starts if hi is None else min(hi, grid.n_slots)
        if lo >= hi:
            return None
        ends = self.ends(req.duration_s)
        starts = np.arange(lo, hi, dtype=np.int64)
        stops = ends[lo:hi]
        ok = np.ones(hi - lo, dtype=np.bool_)
        if deadline and req.deadline is not None:
            ok &= grid.bounds[lo:hi] + req.duration_s <= req.deadline
        total, guar = self.tenant_arrays(req.tenant, req.gpu_class)
        if limit is not None:
            ok &= _window_ok(total + req.gpus > limit, starts, stops)
        if guaranteed and guaranteed_cap is not None:
            ok &= _window_ok(guar + req.gpus > guaranteed_cap, starts, stops)
        p, k = req.gpus_per_node, req.nodes_needed
        if not capacity:
            cand = starts[ok]
            if len(cand) == 0:
                return None
            kind = ReservationKind.GUARANTEED if guaranteed else ReservationKind.BORROWED
            return Placement(req, int(cand[0]), (), kind)
        used = pool.used_run if running_only else pool.used
        if reclaim:
            free_all = pool.caps[:, None] - used + pool.recl
            cnt = ((free_all >= p) & pool.sched[:, None]).sum(axis=0)
        elif running_only:
            cnt = ((pool.caps[:, None] - used >= p) & pool.sched[:, None]).sum(axis=0)
        else:
            cnt = pool.count(p)
        ok &= _window_ok(cnt < k, starts, stops)
        kind = ReservationKind.GUARANTEED if guaranteed else ReservationKind.BORROWED
        fits = pool.sched & (pool.caps >= p)
        for i in starts[ok]:
            i = int(i)
            j = int(ends[i])
            col = pool.caps - used[:, i] + (pool.recl[:, i] if reclaim else 0)
            rows = np.nonzero(fits & (col >= p))[0]
            if len(rows) < k:
                continue
            free = pool.caps[rows, None] - used[rows, i:j]
            tight = free.min(axis=1)
            if not reclaim:
                good = rows[tight >= p]
                if len(good) < k:
                    continue
                chosen = self._choose(pool, good, tight[tight >= p], k, prefer)
                return Placement(req, i, chosen, kind)
            found = self._choose_with_reclaim(pool, req, rows, free, i, j, k, prefer)
            if found is not None:
                nodes, preempt = found
                return Placement(req, i, nodes, kind, preempt)
        return None

    @staticmethod
    def _choose(
        pool: ClassPool, rows: IntArray, tight: I32, k: int, prefer: frozenset[str]
    ) -> tuple[int, ...]:
        """Best fit: nodes of the previous plan first, then the fullest, which keeps whole
        nodes free for large gangs; ties by name order (row order)."""
        pref = np.asarray([pool.nodes[r] not in prefer for r in rows], dtype=np.int64)
        order = np.lexsort((rows, tight, pref))
        return tuple(int(rows[o]) for o in order[:k])

    def _choose_with_reclaim(
        self,
        pool: ClassPool,
        req: Request,
        rows: IntArray,
        free: I32,
        i: int,
        j: int,
        k: int,
        prefer: frozenset[str],
    ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Pick ``k`` nodes, fewest reclaims first; each reclaim ends a whole running borrowed
        reservation of another tenant at boundary ``i``."""
        p = req.gpus_per_node
        options: list[tuple[int, int, int, tuple[int, ...]]] = []
        for pos, r in enumerate(rows):
            r = int(r)
            level = free[pos].copy()
            if level.min() >= p:
                options.append((0, int(level.min()), r, ()))
                continue
            victims = [
                rec
                for rec in pool.victims.get(r, ())
                if rec.preempted_at is None
                and rec.reclaim_slot is not None
                and rec.reclaim_slot <= i
                and rec.b > i
                and rec.tenant != req.tenant
            ]
            victims.sort(key=lambda rec: -sum(g for n, g in rec.nodes if n == r))
            taken: list[int] = []
            for rec in victims:
                g = sum(gg for n, gg in rec.nodes if n == r)
                level[: max(0, min(rec.b, j) - i)] += g
                taken.append(rec.rid)
                if level.min() >= p:
                    break
            if level.min() >= p:
                options.append((len(taken), int(level.min()), r, tuple(taken)))
        if len(options) < k:
            return None
        options.sort(key=lambda o: (o[0], pool.nodes[o[2]] not in prefer, o[1], o[2]))
        best = options[:k]
        preempt: list[int] = []
        for option in best:
            preempt.extend(t for t in option[3] if t not in preempt)
        return tuple(o[2] for o in best), tuple(preempt)

    def blockers(
        self, req: Request, slot: int, *, running_only: bool, planned_only: bool = False
    ) -> list[tuple[str, int]]:
        """Tenants holding GPUs on nodes that could host ``req`` during its window from
        ``slot``, with the GPUs they hold there, most first."""
        pool = self.pools.get(req.gpu_class)
        if pool is None:
            return []
        j = int(self.ends(req.duration_s)[slot])
        h = pool.holds
        n = h.n
        on = (h.a[:n] < j) & (h.end[:n] > slot) & (pool.caps >= req.gpus_per_node)[h.node[:n]]
        if running_only:
            on &= h.running[:n]
        if planned_only:
            on &= ~h.running[:n]
        per = np.bincount(h.tenant[:n][on], weights=h.gpus[:n][on], minlength=len(h.tenants))
        held = {h.tenants[t]: int(per[t]) for t in np.nonzero(per)[0]}
        return sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))
