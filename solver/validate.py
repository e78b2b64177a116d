"""An independent check of a plan against every rule, sharing no code with the planners.

It works on exact times (no grid), re-deriving usage by sweeping interval endpoints, so a bug
in the planners' slot bookkeeping cannot hide a violation. Running reservations were admitted
under the rules of their time (a quota may have been lowered since, a node may have shrunk), so
an over-use is only charged to the plan at moments when something the plan added is active.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from solver.model import Plan, Problem, Reason, ReservationKind


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``rule`` is a stable code, ``subject`` what breaks it."""

    rule: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


# start, end, amount, added by the plan (True) or already running (False)
Interval = tuple[int, int, int, bool]


def _worst(intervals: list[Interval], cap: int) -> tuple[int, int] | None:
    """The highest level above ``cap`` reached while a plan-added interval is active, and when;
    ``None`` when there is none."""
    events: list[tuple[int, int, int]] = []  # time, amount delta, added delta
    for start, end, amount, added in intervals:
        if end > start:
            events.append((start, amount, int(added)))
            events.append((end, -amount, -int(added)))
    events.sort()
    level = added_now = 0
    worst: tuple[int, int] | None = None
    i = 0
    while i < len(events):
        t = events[i][0]
        while i < len(events) and events[i][0] == t:  # apply every change at t before judging
            level += events[i][1]
            added_now += events[i][2]
            i += 1
        if added_now > 0 and level > cap and (worst is None or level > worst[0]):
            worst = (level, t)
    return worst


def check_plan(problem: Problem, plan: Plan) -> list[Violation]:
    """Every rule ``plan`` breaks for ``problem`` (empty when the plan is valid)."""
    out: list[Violation] = []
    nodes = {n.name: n for n in problem.nodes}
    requests = {r.id: r for r in problem.requests}
    running = {r.request_id: r for r in problem.running}
    horizon_end = problem.now + problem.horizon_s

    # Coverage: every request answered exactly once, nothing else answered.
    for rid in sorted(set(plan.assignments) & set(plan.unplaced)):
        out.append(Violation("coverage", f"request {rid}", "both placed and unplaced"))
    for rid in sorted(requests.keys() - plan.assignments.keys() - plan.unplaced.keys()):
        out.append(Violation("coverage", f"request {rid}", "neither placed nor given a reason"))
    for rid in sorted((plan.assignments.keys() | plan.unplaced.keys()) - requests.keys()):
        out.append(Violation("coverage", f"request {rid}", "not a waiting request"))
    for rid, u in plan.unplaced.items():
        if not isinstance(u.reason, Reason):
            out.append(Violation("reason", f"request {rid}", f"unknown reason {u.reason!r}"))

    # Preemptions: only borrowed, preemptible, running reservations, after the minimum runtime,
    # before their end, once each, and each for a guaranteed assignment of the reclaiming
    # tenant that uses GPUs the reservation frees.
    ends: dict[int, int] = {}
    for p in plan.preemptions:
        subject = f"preemption of {p.request_id}"
        run = running.get(p.request_id)
        if run is None:
            out.append(Violation("preemption", subject, "not a running reservation"))
            continue
        if p.request_id in ends:
            out.append(Violation("preemption", subject, "preempted twice"))
        if run.kind is not ReservationKind.BORROWED or not run.preemptible:
            out.append(Violation("preemption", subject, "only borrowed preemptible ones may end"))
        if p.at < problem.now or p.at < run.start + problem.min_runtime_s:
            out.append(Violation("preemption", subject, "before now or the minimum runtime"))
        if p.at >= run.end:
            out.append(Violation("preemption", subject, "at or after its natural end"))
        run_nodes = {n for n, _ in run.allocation}
        served = any(
            a.kind is ReservationKind.GUARANTEED
            and rid in requests
            and requests[rid].tenant == p.for_tenant
            and a.start < run.end
            and a.end > p.at
            and run_nodes & {n for n, _ in a.allocation}
            for rid, a in plan.assignments.items()
        )
        if not served:
            out.append(
                Violation(
                    "preemption", subject, f"frees nothing a guaranteed {p.for_tenant} job uses"
                )
            )
        ends[p.request_id] = min(p.at, run.end)

    node_iv: dict[str, list[Interval]] = defaultdict(list)
    limit_iv: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    guar_iv: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    gpu_s: dict[tuple[str, str], int] = defaultdict(int)

    for run in problem.running:
        end = ends.get(run.request_id, run.end)
        for node_name, gpus in run.allocation:
            node_iv[node_name].append((run.start, end, gpus, False))
        key = (run.tenant, run.gpu_class)
        limit_iv[key].append((run.start, end, run.gpus, False))
        if run.kind is ReservationKind.GUARANTEED:
            guar_iv[key].append((run.start, end, run.gpus, False))

    for rid, a in plan.assignments.items():
        req = requests.get(rid)
        if req is None:
            continue
        subject = f"request {rid}"
        if a.request_id != rid:
            out.append(Violation("coverage", subject, f"keyed under {a.request_id}"))
        if a.end - a.start != req.duration_s:
            out.append(Violation("duration", subject, f"{a.end - a.start}s != {req.duration_s}s"))
        if a.start < problem.now or a.start >= horizon_end:
            out.append(Violation("horizon", subject, "starts outside [now, now + horizon)"))
        if req.not_before is not None and a.start < req.not_before:
            out.append(Violation("not_before", subject, "starts before not_before"))
        if req.deadline is not None and a.end > req.deadline:
            out.append(Violation("deadline", subject, "ends after its deadline"))
        names = [n for n, _ in a.allocation]
        if len(set(names)) != len(names) or len(names) != req.nodes_needed:
            out.append(Violation("gang", subject, f"{len(names)} nodes, {req.nodes_needed} needed"))
        for node_name, gpus in a.allocation:
            if gpus != req.gpus_per_node:
                out.append(Violation("gang", subject, f"{gpus} GPUs on {node_name}"))
            node = nodes.get(node_name)
            if node is None:
                out.append(Violation("node", subject, f"unknown node {node_name}"))
                continue
            if node.gpu_class != req.gpu_class:
                out.append(Violation("gpu_class", subject, f"{node_name} is {node.gpu_class}"))
            if not node.schedulable:
                out.append(Violation("draining", subject, f"{node_name} takes no new work"))
            node_iv[node_name].append((a.start, a.end, gpus, True))
        tenant = problem.tenants.get(req.tenant)
        quota = tenant.quotas.get(req.gpu_class) if tenant else None
        if quota is None:
            out.append(Violation("quota", subject, f"no quota for {req.gpu_class}"))
        if not req.preemptible and a.kind is not ReservationKind.GUARANTEED:
            out.append(Violation("preemptible", subject, "a non-preemptible request borrows"))
        key = (req.tenant, req.gpu_class)
        limit_iv[key].append((a.start, a.end, req.gpus, True))
        if a.kind is ReservationKind.GUARANTEED:
            guar_iv[key].append((a.start, a.end, req.gpus, True))
        gpu_s[key] += req.gpus * req.duration_s

    for name, ivs in sorted(node_iv.items()):
        node = nodes.get(name)
        over = _worst(ivs, node.gpus if node else 0)
        if over is not None:
            out.append(Violation("capacity", f"node {name}", f"{over[0]} GPUs at {over[1]}"))
    for (tenant_name, cls), ivs in sorted(limit_iv.items()):
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        over = _worst(ivs, quota.limit if quota else 0)
        if over is not None:
            out.append(
                Violation("limit", f"tenant {tenant_name}/{cls}", f"{over[0]} GPUs at {over[1]}")
            )
    for (tenant_name, cls), ivs in sorted(guar_iv.items()):
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        over = _worst(ivs, quota.guaranteed if quota else 0)
        if over is not None:
            out.append(
                Violation(
                    "guaranteed", f"tenant {tenant_name}/{cls}", f"{over[0]} GPUs at {over[1]}"
                )
            )
    for (tenant_name, cls), used in sorted(gpu_s.items()):
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        if quota is not None and quota.budget_gpu_s is not None and used > quota.budget_gpu_s:
            out.append(
                Violation(
                    "budget",
                    f"tenant {tenant_name}/{cls}",
                    f"{used} GPU-s planned, {quota.budget_gpu_s:g} left",
                )
            )
    return out
