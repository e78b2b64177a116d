"""CP-SAT on a small neighbourhood at node level: exact, so its solutions need no repair.

A neighbourhood is a handful of requests of one class; every other reservation stays where
it is and is already booked in a :class:`~solver.ledger.Ledger`. The model mirrors the
ledger's bookkeeping exactly (slot-based occupancy, per node and per tenant), so a solution
is committed as is and is valid by construction (the validator still checks the final plan):

- start: a grid boundary in the request's window; its end slot follows by table lookup;
- gang: ``nodes_needed`` distinct candidate nodes, each holding ``gpus_per_node``;
- capacity per node and slot, next to what the ledger already holds there;
- tenant limit and guaranteed quota per slot (a guaranteed/borrowed label per request);
- budget left; stability (keeping the previous start) and earliness in the objective.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from solver.ledger import I32, Ledger, Placement
from solver.model import Request, ReservationKind
from solver.objective import Weights

FINE_CHOICES = 12  # every start boundary this far into a request's window is a choice
SPREAD_CHOICES = 16  # then this many spread up to its current start


@dataclass
class _Item:
    req: Request
    present: cp_model.IntVar
    choices: list[int]
    pick: cp_model.IntVar
    slot: cp_model.IntVar
    end: cp_model.IntVar
    span: cp_model.IntVar
    unit: cp_model.IntVar
    earn: cp_model.IntVar
    nodes: dict[int, cp_model.IntVar]
    guaranteed: cp_model.IntVar | None
    same: cp_model.IntVar | None


def _segments(profile: I32, cap: int) -> list[tuple[int, int, int]]:
    """Run-length segments ``(start slot, end slot, level)`` of a slot profile (clipped)."""
    out: list[tuple[int, int, int]] = []
    n = len(profile)
    if n == 0:
        return out
    change = np.flatnonzero(np.diff(profile)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        level = int(profile[a])
        if level > 0:
            out.append((a, b, min(level, cap)))
    return out


def _cumulative(
    m: cp_model.CpModel,
    cap: int,
    profile: I32,
    variable: list[tuple[cp_model.IntervalVar, int]],
) -> None:
    if not variable:
        return
    ivs = [iv for iv, _ in variable]
    demands = [d for _, d in variable]
    for a, b, level in _segments(profile, cap):
        ivs.append(m.new_fixed_size_interval_var(a, b - a, ""))
        demands.append(level)
    m.add_cumulative(ivs, demands, cap)


def _candidate_slots(first: int, latest: int, current: int | None, anchors: set[int]) -> list[int]:
    """Start boundaries a freed request may take: every one early in its window, a spread up
    to its current start, the current start, later ones at doubling distances (moving later
    can make room for others), and ``anchors``: where other freed requests end if they start
    at once or stay. Few choices keep the model small."""
    every = list(range(first, min(latest, first + FINE_CHOICES)))
    until = current if current is not None else latest - 1
    spread = np.linspace(first, until, SPREAD_CHOICES).round().astype(int).tolist()
    later: list[int] = []
    if current is not None:
        step = 1
        while current + step < latest:
            later.append(current + step)
            step *= 2
    chosen = {c for c in [*every, *spread, *later, *anchors] if first <= c < latest}
    if current is not None:
        chosen.add(current)
    return sorted(chosen)


def solve_neighbourhood(
    ledger: Ledger,
    free: list[Request],
    current: dict[int, Placement],
    nodes: list[int],
    weights: Weights,
    deadline: float,
    workers: int,
    seed: int,
) -> dict[int, Placement] | None:
    """Better placements for ``free`` (all of one class, on the class's node indices
    ``nodes``, which include their current nodes) than ``current`` gives them, or ``None``
    when CP-SAT finds none by ``deadline`` (a ``time.perf_counter()`` value, model building
    included). ``ledger`` holds everything else."""
    problem, grid = ledger.problem, ledger.grid
    cls = free[0].gpu_class
    pool = ledger.pools[cls]
    units = [grid.units(int(b)) for b in grid.bounds[: grid.n_starts]]
    h = weights.horizon_units
    m = cp_model.CpModel()
    windows: dict[int, tuple[int, int]] = {}
    for r in free:
        first = grid.first_start_at_or_after(max(problem.now, r.not_before or problem.now))
        latest = grid.n_starts
        if r.deadline is not None:
            latest = min(latest, grid.first_start_at_or_after(r.deadline - r.duration_s + 1))
        windows[r.id] = (first, latest)
    free = [r for r in free if windows[r.id][0] < windows[r.id][1]]
    if not free:
        return None
    anchors: set[int] = set()
    for r in free:
        ends_r = ledger.ends(r.duration_s)
        anchors.add(int(ends_r[windows[r.id][0]]))
        if r.id in current:
            anchors.add(int(ends_r[current[r.id].slot]))

    items: list[_Item] = []
    per_node: dict[int, list[tuple[cp_model.IntervalVar, int]]] = {n: [] for n in nodes}
    per_tenant: dict[str, list[tuple[cp_model.IntervalVar, int]]] = {}
    per_tenant_g: dict[str, list[tuple[cp_model.IntervalVar, int]]] = {}
    spend: dict[str, list[tuple[int, cp_model.IntVar]]] = {}
    for k, r in enumerate(free):
        first, latest = windows[r.id]
        quota = problem.tenants[r.tenant].quotas[cls]
        cur = current.get(r.id)
        choices = _candidate_slots(first, latest, cur.slot if cur is not None else None, anchors)
        ends_all = ledger.ends(r.duration_s)
        ends = [int(ends_all[i]) for i in choices]
        x = m.new_bool_var(f"x{k}")
        pick = m.new_int_var(0, len(choices) - 1, f"i{k}")
        slot = m.new_int_var_from_domain(cp_model.Domain.from_values(choices), f"k{k}")
        m.add_element(pick, choices, slot)
        end = m.new_int_var_from_domain(cp_model.Domain.from_values(sorted(set(ends))), f"e{k}")
        m.add_element(pick, ends, end)
        span = m.new_int_var(1, max(e - c for e, c in zip(ends, choices, strict=True)), f"n{k}")
        m.add(span == end - slot)
        unit = m.new_int_var_from_domain(
            cp_model.Domain.from_values(sorted({units[i] for i in choices})), f"u{k}"
        )
        m.add_element(pick, [units[i] for i in choices], unit)
        earn = m.new_int_var(0, h, f"w{k}")
        m.add(earn <= h - unit)
        m.add(earn <= h * x)
        chosen: dict[int, cp_model.IntVar] = {}
        for n in nodes:
            if pool.caps[n] < r.gpus_per_node or not pool.sched[n]:
                continue
            a = m.new_bool_var(f"a{k}_{n}")
            chosen[n] = a
            iv = m.new_optional_interval_var(slot, span, end, a, "")
            per_node[n].append((iv, r.gpus_per_node))
        m.add(sum(chosen.values()) == r.nodes_needed * x)
        whole = m.new_optional_interval_var(slot, span, end, x, "")
        per_tenant.setdefault(r.tenant, []).append((whole, r.gpus))
        g: cp_model.IntVar | None = None
        if r.gpus <= quota.guaranteed:
            if r.preemptible:
                g = m.new_bool_var(f"g{k}")
                m.add_implication(g, x)
                giv = m.new_optional_interval_var(slot, span, end, g, "")
            else:
                giv = whole
            per_tenant_g.setdefault(r.tenant, []).append((giv, r.gpus))
        elif not r.preemptible:
            m.add(x == 0)
        same = None
        prev = problem.previous.get(r.id)
        if prev is not None:
            j = grid.first_start_at_or_after(prev.start)
            if j in choices and int(grid.bounds[j]) == prev.start:
                same = m.new_bool_var(f"s{k}")
                m.add(slot == j).only_enforce_if(same)
                m.add_implication(same, x)
        spend.setdefault(r.tenant, []).append((r.gpus * r.duration_s, x))
        items.append(_Item(r, x, choices, pick, slot, end, span, unit, earn, chosen, g, same))

    for n, variable in per_node.items():
        _cumulative(m, int(pool.caps[n]), pool.used[n], variable)
    for tenant, variable in per_tenant.items():
        total, guar = ledger.tenant_arrays(tenant, cls)
        quota = problem.tenants[tenant].quotas[cls]
        _cumulative(m, quota.limit, total, variable)
        if tenant in per_tenant_g:
            _cumulative(m, quota.guaranteed, guar, per_tenant_g[tenant])
    for tenant, costs in spend.items():
        left = ledger.budget_left(tenant, cls)
        if left is not None:
            m.add(sum(c * x for c, x in costs) <= int(left))

    objective = [weights.coefficient(it.req.id) * it.earn for it in items]
    objective += [weights.move(it.req.id) * it.same for it in items if it.same is not None]
    m.maximize(sum(objective))

    # A complete hint (absent requests included): CP-SAT then starts from the current plan
    # at once instead of searching for a first solution.
    hint_value = 0
    for it in items:
        pl = current.get(it.req.id)
        at = pl.slot if pl is not None else it.choices[0]
        end_slot = int(ledger.ends(it.req.duration_s)[at])
        m.add_hint(it.present, pl is not None)
        m.add_hint(it.pick, it.choices.index(at))
        m.add_hint(it.slot, at)
        m.add_hint(it.end, end_slot)
        m.add_hint(it.span, end_slot - at)
        m.add_hint(it.unit, units[at])
        m.add_hint(it.earn, h - units[at] if pl is not None else 0)
        for n, a in it.nodes.items():
            m.add_hint(a, pl is not None and n in pl.nodes)
        if it.guaranteed is not None:
            m.add_hint(it.guaranteed, pl is not None and pl.kind is ReservationKind.GUARANTEED)
        kept = False
        if it.same is not None and pl is not None:
            kept = int(grid.bounds[pl.slot]) == problem.previous[it.req.id].start
        if it.same is not None:
            m.add_hint(it.same, kept)
        if pl is not None:
            hint_value += weights.coefficient(it.req.id) * (h - units[at])
            hint_value += weights.move(it.req.id) if kept else 0

    solver = cp_model.CpSolver()
    left = deadline - time.perf_counter()
    if left < 0.02:
        return None
    solver.parameters.max_time_in_seconds = left
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    # Probing in presolve costs more than a whole neighbourhood's budget on these models.
    solver.parameters.cp_model_probing_level = 0
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    if solver.objective_value <= hint_value:
        return None
    out: dict[int, Placement] = {}
    for it in items:
        if not solver.boolean_value(it.present):
            continue
        used = tuple(n for n, a in it.nodes.items() if solver.boolean_value(a))
        if it.guaranteed is not None:
            kind = (
                ReservationKind.GUARANTEED
                if solver.boolean_value(it.guaranteed)
                else ReservationKind.BORROWED
            )
        else:
            quota = problem.tenants[it.req.tenant].quotas[cls]
            fits_g = it.req.gpus <= quota.guaranteed
            kind = ReservationKind.GUARANTEED if fits_g else ReservationKind.BORROWED
        out[it.req.id] = Placement(it.req, solver.value(it.slot), used, kind)
    return out
