"""Large-neighbourhood search around the greedy plan with exact node-level CP-SAT models.

Each step frees a few requests of one class (the ones the current plan delays most, sampled
so that steps differ), books everything else in a fresh ledger, and asks
:func:`~solver.cpsat.nodes.solve_neighbourhood` for better placements of the freed ones.
An improvement is kept (the objective only goes up); the loop runs until its time is spent.
Requests whose current placement reclaims running work are never freed, so reclaims made by
the greedy planner stay as they are.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from solver.cpsat.nodes import solve_neighbourhood
from solver.grid import TimeGrid
from solver.ledger import Ledger, Placement
from solver.model import Problem, Request
from solver.objective import Weights

NEIGHBOURHOOD = 14  # requests freed per step, at most
NODES = 6  # nodes (besides the freed requests' own) whose planned work in the window moves


@dataclass
class LnsResult:
    placements: dict[int, Placement]
    steps: int
    improved: int
    gain: int


def _loss(weights: Weights, grid: TimeGrid, req: Request, pl: Placement | None) -> int:
    first = grid.first_start_at_or_after(max(grid.now, req.not_before or grid.now))
    if first >= grid.n_starts:
        return 0
    best = weights.placed(req.id, int(grid.bounds[first]))
    got = weights.placed(req.id, int(grid.bounds[pl.slot])) if pl is not None else 0
    return best - got


def improve(
    problem: Problem,
    grid: TimeGrid,
    weights: Weights,
    placements: dict[int, Placement],
    eligible: list[Request],
    deadline: float,
    workers: int,
    seed: int,
    step_s: float = 0.4,
) -> LnsResult:
    """Improve ``placements`` until ``deadline`` (a ``time.perf_counter()`` value)."""
    rng = random.Random(seed)
    current = dict(placements)
    steps = improved = gain = 0
    while True:
        now = time.perf_counter()
        if deadline - now < 0.15:
            break
        candidates: list[tuple[int, Request]] = []
        for r in eligible:
            pl = current.get(r.id)
            if pl is not None and pl.preempt:
                continue
            loss = _loss(weights, grid, r, pl)
            if loss > 0:
                candidates.append((loss, r))
        if not candidates:
            break
        seed_loss, seed_req = rng.choices(candidates, weights=[c[0] for c in candidates])[0]
        del seed_loss
        free, nodes = _neighbourhood(problem, grid, current, seed_req, rng)
        free_ids = {r.id for r in free}
        ledger = Ledger(problem, grid)
        for rid, pl in current.items():
            if rid not in free_ids:
                ledger.commit(pl)
        steps += 1
        budget = min(step_s, deadline - time.perf_counter() - 0.1)
        if budget <= 0.05:
            break
        found = solve_neighbourhood(
            ledger, free, current, nodes, weights, budget, workers, seed + steps
        )
        if found is None:
            continue
        before = sum(
            weights.placed(r.id, int(grid.bounds[current[r.id].slot]))
            for r in free
            if r.id in current
        )
        after = sum(weights.placed(rid, int(grid.bounds[pl.slot])) for rid, pl in found.items())
        for r in free:
            current.pop(r.id, None)
        current.update(found)
        improved += 1
        gain += after - before
    return LnsResult(current, steps, improved, gain)


def _neighbourhood(
    problem: Problem,
    grid: TimeGrid,
    current: dict[int, Placement],
    seed: Request,
    rng: random.Random,
) -> tuple[list[Request], list[int]]:
    """A delayed request and the planned work that stands in its way: requests placed on a
    few nodes of its class during the time it could have started earlier."""
    mine = current.get(seed.id)
    until = mine.slot + 1 if mine is not None else grid.n_starts
    cls = seed.gpu_class
    by_id = {r.id: r for r in problem.requests}
    held: dict[int, list[int]] = {}  # node -> movable placements overlapping the window
    for rid, pl in current.items():
        req = by_id[rid]
        if req.gpu_class != cls or pl.preempt or rid == seed.id:
            continue
        if pl.slot >= until:
            continue
        for n in pl.nodes:
            held.setdefault(n, []).append(rid)
    busy = sorted(held, key=lambda n: (-len(held[n]), n))
    picked_nodes = rng.sample(busy[: 3 * NODES], min(NODES, len(busy[: 3 * NODES])))
    free_ids = [seed.id]
    for n in picked_nodes:
        for rid in held[n]:
            if rid not in free_ids and len(free_ids) < NEIGHBOURHOOD:
                free_ids.append(rid)
    free = [by_id[rid] for rid in free_ids]
    nodes = set(picked_nodes)
    for rid in free_ids:
        if rid in current:
            nodes.update(current[rid].nodes)
    return free, sorted(nodes)
