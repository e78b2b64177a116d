"""Large-neighbourhood search around the greedy plan with exact node-level CP-SAT models.

Each step picks a seed, a request the current plan delays or leaves out (drawn in proportion
to the value it loses), frees it together with either its tenant's other work in the class
or the planned work on a few busy nodes before its start, books everything else in a fresh
ledger, and asks :func:`~solver.cpsat.nodes.solve_neighbourhood` for better placements of the
freed requests. Improvements are kept (the objective only goes up). The loop ends at the
deadline or once every seed has had a few fruitless neighbourhoods. Requests whose current
placement reclaims running work are never freed, so reclaims made by greedy stay as they are.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from solver.cpsat.nodes import solve_neighbourhood
from solver.grid import TimeGrid
from solver.ledger import Ledger, Placement
from solver.model import Problem, Request
from solver.objective import Weights

NEIGHBOURHOOD = 14  # requests freed per step, at most
NODES = 6  # nodes (besides the freed requests' own) whose planned work in the window moves
TRIES_PER_SEED = 3  # neighbourhoods around one delayed request before giving up on it


@dataclass
class LnsResult:
    """The improved placements and what the search did."""

    placements: dict[int, Placement]
    steps: int
    improved: int
    gain: int


def _loss(weights: Weights, grid: TimeGrid, req: Request, pl: Placement | None) -> int:
    """What ``req`` loses against starting at its earliest boundary (all of it if left out)."""
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
    step_s: float = 0.3,
) -> LnsResult:
    """Improve ``placements`` until ``deadline`` (a ``time.perf_counter()`` value)."""
    rng = random.Random(seed)
    current = dict(placements)
    steps = improved = gain = 0
    # Seeds tried since the last improvement: each gets a few differently drawn
    # neighbourhoods; when all are spent the search stops early (small problems finish fast).
    tried: dict[int, int] = {}
    while True:
        now = time.perf_counter()
        if deadline - now < 0.1:
            break
        candidates: list[tuple[int, Request]] = []
        for r in eligible:
            pl = current.get(r.id)
            if pl is not None and pl.preempt:
                continue
            loss = _loss(weights, grid, r, pl)
            if loss > 0 and tried.get(r.id, 0) < TRIES_PER_SEED:
                candidates.append((loss, r))
        if not candidates:
            break
        seed_loss, seed_req = rng.choices(candidates, weights=[c[0] for c in candidates])[0]
        del seed_loss
        tried[seed_req.id] = tried.get(seed_req.id, 0) + 1
        free, nodes = _neighbourhood(problem, grid, current, seed_req, rng)
        free_ids = {r.id for r in free}
        ledger = Ledger(problem, grid)
        for rid, pl in current.items():
            if rid not in free_ids:
                ledger.commit(pl)
        nodes = sorted(set(nodes) | _roomy_nodes(ledger, grid, seed_req, current))
        steps += 1
        stop = min(time.perf_counter() + step_s, deadline)
        if stop - time.perf_counter() <= 0.05:
            break
        found = solve_neighbourhood(
            ledger, free, current, nodes, weights, stop, workers, seed + steps
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
        tried.clear()
    return LnsResult(current, steps, improved, gain)


def _neighbourhood(
    problem: Problem,
    grid: TimeGrid,
    current: dict[int, Placement],
    seed: Request,
    rng: random.Random,
) -> tuple[list[Request], list[int]]:
    """A delayed (or left out) request and planned work that may stand in its way: either the
    same tenant's other work in the class (its limit or budget may be what holds the request
    back), or the work planned on a few busy nodes of the class before the request's current
    start."""
    mine = current.get(seed.id)
    until = mine.slot + 1 if mine is not None else grid.n_starts
    cls = seed.gpu_class
    by_id = {r.id: r for r in problem.requests}
    movable = {
        rid: pl
        for rid, pl in current.items()
        if by_id[rid].gpu_class == cls and not pl.preempt and rid != seed.id
    }
    free_ids = [seed.id]
    picked_nodes: set[int] = set()
    mates = [rid for rid in movable if by_id[rid].tenant == seed.tenant]
    if mates and rng.random() < 0.5:
        # Latest-starting first: they gain least from their place and hold budget and limit.
        mates.sort(key=lambda rid: (movable[rid].slot >= until, -movable[rid].slot))
        free_ids += mates[: NEIGHBOURHOOD - 1]
    else:
        held: dict[int, list[int]] = {}
        for rid, pl in movable.items():
            if pl.slot < until:
                for n in pl.nodes:
                    held.setdefault(n, []).append(rid)
        busy = sorted(held, key=lambda n: (-len(held[n]), n))[: 3 * NODES]
        picked_nodes.update(rng.sample(busy, min(NODES, len(busy))))
        for n in sorted(picked_nodes):
            for rid in held[n]:
                if rid not in free_ids and len(free_ids) < NEIGHBOURHOOD:
                    free_ids.append(rid)
    for rid in free_ids:
        if rid in current:
            picked_nodes.update(current[rid].nodes)
    return [by_id[rid] for rid in free_ids], sorted(picked_nodes)


def _roomy_nodes(
    ledger: Ledger, grid: TimeGrid, seed: Request, current: dict[int, Placement]
) -> set[int]:
    """The nodes with the most free slots for ``seed`` before its current start, so that it
    can land somewhere even when no freed work makes room."""
    pool = ledger.pools[seed.gpu_class]
    first = grid.first_start_at_or_after(max(grid.now, seed.not_before or grid.now))
    mine = current.get(seed.id)
    until = mine.slot + 1 if mine is not None else grid.n_starts
    hi = min(grid.n_slots, max(until, first + 1) + 1)
    room = (pool.caps[:, None] - pool.used[:, first:hi] >= seed.gpus_per_node).sum(axis=1)
    room = room * (pool.sched & (pool.caps >= seed.gpus_per_node))
    return {int(n) for n in np.argsort(-room, kind="stable")[:NODES] if room[n] > 0}
