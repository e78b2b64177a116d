"""An independent check of a plan against every rule, written without the planners' code.

It re-derives usage from the plan by sweeping interval endpoints, so a bug shared with a
planner's bookkeeping cannot hide a violation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from solver.model import Plan, Problem, ReservationKind


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``rule`` is a stable code, ``subject`` what breaks it."""

    rule: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


Interval = tuple[int, int, int]  # start, end, amount


def _peak(intervals: list[Interval]) -> tuple[int, int]:
    """Highest total amount over time and the moment it is reached."""
    events: list[tuple[int, int]] = []
    for start, end, amount in intervals:
        if end > start:
            events.append((start, amount))
            events.append((end, -amount))
    events.sort(key=lambda e: (e[0], e[1]))
    level = peak = 0
    at = 0
    for t, d in events:
        level += d
        if level > peak:
            peak, at = level, t
    return peak, at


def check_plan(problem: Problem, plan: Plan) -> list[Violation]:
    out: list[Violation] = []
    nodes = {n.name: n for n in problem.nodes}
    requests = {r.id: r for r in problem.requests}
    running = {r.request_id: r for r in problem.running}
    preempt_at: dict[int, int] = {}

    for p in plan.preemptions:
        run = running.get(p.request_id)
        if run is None:
            out.append(Violation("preemption", f"request {p.request_id}", "not running"))
            continue
        if run.kind is not ReservationKind.BORROWED or not run.preemptible:
            out.append(Violation("preemption", f"request {p.request_id}", "not borrowed"))
        if p.at < problem.now or p.at < run.start + problem.min_runtime_s:
            out.append(
                Violation("preemption", f"request {p.request_id}", "before the minimum runtime")
            )
        preempt_at[p.request_id] = min(p.at, run.end)

    for rid in set(plan.assignments) & set(plan.unplaced):
        out.append(Violation("coverage", f"request {rid}", "both placed and unplaced"))
    for rid in requests.keys() - plan.assignments.keys() - plan.unplaced.keys():
        out.append(Violation("coverage", f"request {rid}", "neither placed nor given a reason"))

    node_iv: dict[str, list[Interval]] = defaultdict(list)
    tenant_iv: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    guar_iv: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    planned_gpu_s: dict[tuple[str, str], float] = defaultdict(float)

    for run in problem.running:
        end = preempt_at.get(run.request_id, run.end)
        for node, gpus in run.allocation:
            node_iv[node].append((run.start, end, gpus))
        key = (run.tenant, run.gpu_class)
        tenant_iv[key].append((run.start, end, run.gpus))
        if run.kind is ReservationKind.GUARANTEED:
            guar_iv[key].append((run.start, end, run.gpus))

    horizon_end = problem.now + problem.horizon_s
    for rid, a in plan.assignments.items():
        req = requests.get(rid)
        subject = f"request {rid}"
        if req is None:
            out.append(Violation("coverage", subject, "not in the problem"))
            continue
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
            node = nodes.get(node_name)
            if gpus != req.gpus_per_node:
                out.append(Violation("gang", subject, f"{gpus} GPUs on {node_name}"))
            if node is None:
                out.append(Violation("node", subject, f"unknown node {node_name}"))
                continue
            if node.gpu_class != req.gpu_class:
                out.append(Violation("gpu_class", subject, f"{node_name} is {node.gpu_class}"))
            if not node.schedulable:
                out.append(Violation("draining", subject, f"{node_name} takes no new work"))
            node_iv[node_name].append((a.start, a.end, gpus))
        if not req.preemptible and a.kind is not ReservationKind.GUARANTEED:
            out.append(Violation("preemptible", subject, "non-preemptible request borrows"))
        key = (req.tenant, req.gpu_class)
        tenant_iv[key].append((a.start, a.end, req.gpus))
        if a.kind is ReservationKind.GUARANTEED:
            guar_iv[key].append((a.start, a.end, req.gpus))
        planned_gpu_s[key] += req.gpus * req.duration_s

    for name, ivs in node_iv.items():
        node = nodes.get(name)
        cap = node.gpus if node else 0
        peak, at = _peak(ivs)
        if peak > cap:
            out.append(Violation("capacity", f"node {name}", f"{peak} GPUs > {cap} at {at}"))
    for (tenant_name, cls), ivs in tenant_iv.items():
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        limit = quota.limit if quota else 0
        # Running reservations were admitted under the quotas of their time; only judge them
        # together with new assignments.
        if not any(iv for iv in ivs if iv[0] >= problem.now):
            continue
        peak, at = _peak(ivs)
        if peak > limit:
            out.append(Violation("limit", f"tenant {tenant_name}/{cls}", f"{peak} > {limit}"))
    for (tenant_name, cls), ivs in guar_iv.items():
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        guaranteed = quota.guaranteed if quota else 0
        peak, at = _peak(ivs)
        if peak > guaranteed:
            out.append(
                Violation("guaranteed", f"tenant {tenant_name}/{cls}", f"{peak} > {guaranteed}")
            )
    for (tenant_name, cls), used in planned_gpu_s.items():
        tenant = problem.tenants.get(tenant_name)
        quota = tenant.quotas.get(cls) if tenant else None
        if quota is not None and quota.budget_gpu_s is not None and used > quota.budget_gpu_s:
            out.append(
                Violation("budget", f"tenant {tenant_name}/{cls}", f"{used} > {quota.budget_gpu_s}")
            )
    return out
