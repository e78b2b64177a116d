"""The plan objective: one integer score that every planner is judged by (higher is better).

Every placed request earns ``weight * gpu_hours * earliness``, where ``earliness`` is the
horizon minus the start's delay (both in resolution units): a request placed at ``now`` earns
the most, one at the end of the horizon almost nothing, an unplaced one nothing. The weight
carries the order of importance (weighted so that the order nearly always holds, i.e.
"lexicographic-ish"):

1. guaranteed demand first: a request that is *entitled* (the front of its tenant's queue that
   fits in the guaranteed quota beside the tenant's running guaranteed reservations) gets a
   bonus larger than any priority weight, so it wins capacity from borrowers;
2. priority x fair share: ``priority_factor`` (doubling per level) times ``fair_factors``
   (tenants below their weighted share of decayed usage count more);
3. minus a penalty per preemption and per request whose start moved from the previous plan
   (ETAs stay stable unless moving buys something).

The weight deliberately does not depend on whether a reservation is labelled guaranteed or
borrowed: rewarding the label would pay a planner for holding work back until it fits the
guaranteed quota while GPUs idle. Packing (keeping whole nodes free for large gangs) is the last
tie-breaker and is done by the node chooser, not scored here.

The CP-SAT model uses the same coefficients, so its bound is in the same units as
:func:`score`, and greedy and CP-SAT plans compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from solver.model import Plan, Problem, Request, ReservationKind, Running

PRIORITY_MIN, PRIORITY_MAX = -2, 4
FAIR_MAX = 8
# A preemption costs what an hour's delay of one GPU-hour of average work costs, per GPU it
# takes back: less than serving entitled demand an hour sooner, more than keeping an ETA.
PREEMPT_MINUTES = 60
# Moving a request's start costs a quarter hour's delay of its own lowest-weight value.
MOVE_MINUTES = 15


def gpu_hours(req: Request) -> int:
    """The request's size in whole GPU-hours (at least 1), its weight in the objective."""
    return max(1, -(-req.gpus * req.duration_s // 3600))


def priority_factor(priority: int) -> int:
    """1 .. 64, doubling per priority level: priorities below -2 or above 4 saturate."""
    return 1 << (min(max(priority, PRIORITY_MIN), PRIORITY_MAX) - PRIORITY_MIN)


def fair_factors(problem: Problem) -> dict[str, int]:
    """1 .. 8 per tenant: tenants that used less than their weighted share of the decayed
    usage get more (8 with no usage, 4 at exactly their share, 2 at three times it)."""
    total_usage = sum(t.usage for t in problem.tenants.values())
    total_weight = sum(t.weight for t in problem.tenants.values())
    out: dict[str, int] = {}
    for name, t in problem.tenants.items():
        if total_usage <= 0 or total_weight <= 0:
            out[name] = FAIR_MAX // 2
            continue
        ratio = (t.usage / total_usage) / (t.weight / total_weight)
        out[name] = max(1, min(FAIR_MAX, round(FAIR_MAX / (1.0 + ratio))))
    return out


@dataclass(frozen=True, slots=True)
class Weights:
    """Integer coefficients of the objective for one problem."""

    horizon_units: int
    resolution_s: int
    now: int
    value: dict[int, int]  # request id -> entitlement bonus + priority x fair-share factor
    size: dict[int, int]  # request id -> GPU-hours
    entitled: frozenset[int]
    preempt_unit: int

    def earliness(self, start: int) -> int:
        delay = -((self.now - start) // self.resolution_s)
        return self.horizon_units - delay

    def coefficient(self, rid: int) -> int:
        """Score per resolution unit of earliness of request ``rid``."""
        return self.value[rid] * self.size[rid]

    def placed(self, rid: int, start: int) -> int:
        """Score of request ``rid`` placed at ``start``."""
        return self.coefficient(rid) * self.earliness(start)

    def preemption(self, run: Running) -> int:
        return self.preempt_unit * run.gpus

    def move(self, rid: int) -> int:
        return MOVE_MINUTES * self.size[rid]


def entitled_requests(problem: Problem) -> frozenset[int]:
    """Requests inside their tenant's guaranteed quota: per tenant and class, in the tenant's
    own order (promised starts, then priority, then submission), those whose GPUs still fit
    beside the guaranteed reservations running now and the entitled requests before them."""
    running_g: dict[tuple[str, str], int] = {}
    for run in problem.running:
        if run.kind is ReservationKind.GUARANTEED and run.start <= problem.now < run.end:
            key = (run.tenant, run.gpu_class)
            running_g[key] = running_g.get(key, 0) + run.gpus
    filled = dict(running_g)
    out: set[int] = set()

    def order(r: Request) -> tuple[int, int, int, int]:
        promised = r.id in problem.promised  # a start promised on guaranteed quota stays so
        return (0 if promised else 1, -r.priority, r.submitted_at, r.id)

    for req in sorted(problem.requests, key=order):
        tenant = problem.tenants.get(req.tenant)
        quota = tenant.quotas.get(req.gpu_class) if tenant else None
        if quota is None:
            continue
        key = (req.tenant, req.gpu_class)
        if filled.get(key, 0) + req.gpus <= quota.guaranteed:
            filled[key] = filled.get(key, 0) + req.gpus
            out.add(req.id)
    return frozenset(out)


def weights_of(problem: Problem) -> Weights:
    fair = fair_factors(problem)
    base = {r.id: priority_factor(r.priority) * fair.get(r.tenant, 1) for r in problem.requests}
    bonus = 2 * (1 << (PRIORITY_MAX - PRIORITY_MIN)) * FAIR_MAX
    entitled = entitled_requests(problem)
    value = {rid: v + (bonus if rid in entitled else 0) for rid, v in base.items()}
    return Weights(
        horizon_units=-(-problem.horizon_s // problem.resolution_s),
        resolution_s=problem.resolution_s,
        now=problem.now,
        value=value,
        size={r.id: gpu_hours(r) for r in problem.requests},
        entitled=entitled,
        preempt_unit=PREEMPT_MINUTES * FAIR_MAX,
    )


def score(problem: Problem, plan: Plan, weights: Weights | None = None) -> int:
    """The objective of ``plan`` (assumed valid); the same function for every planner."""
    w = weights or weights_of(problem)
    total = 0
    for rid, a in plan.assignments.items():
        total += w.placed(rid, a.start)
        prev = problem.previous.get(rid)
        if prev is not None and prev.start != a.start:
            total -= w.move(rid)
    for rid in problem.previous:
        if rid in plan.unplaced:
            total -= w.move(rid)
    running = {r.request_id: r for r in problem.running}
    for p in plan.preemptions:
        run = running.get(p.request_id)
        if run is not None:
            total -= w.preemption(run)
    return total
