"""Checks of the stored plan, written independently of the scheduler: no node, tenant limit
or guarantee is ever over-committed by open and planned reservations, at any moment."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import text


def _peak(intervals: list[tuple[datetime, datetime, int]]) -> int:
    events: list[tuple[datetime, int]] = []
    for a, b, g in intervals:
        if b > a:
            events += [(a, g), (b, -g)]
    level = peak = 0
    for _, d in sorted(events, key=lambda e: (e[0], e[1])):
        level += d
        peak = max(peak, level)
    return peak


def _dt(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def plan_violations(engine: Any) -> list[str]:
    """Every over-commitment among planned and active reservations stored in the database."""
    with engine.connect() as c:
        nodes = dict(c.execute(text("SELECT name, gpus FROM node")).all())
        quotas = {
            (t, g): (gu, li)
            for t, g, gu, li in c.execute(
                text('SELECT tenant, gpu_class, guaranteed, "limit" FROM quota')
            ).all()
        }
        rows = c.execute(
            text(
                "SELECT r.id, r.request_id, r.tenant, r.gpu_class, r.gpus, r.start, "
                'coalesce(r.preempt_at, r."end"), '
                "r.kind, r.state, n.node, n.gpus FROM reservation r "
                "JOIN reservation_node n ON n.reservation_id = r.id "
                "WHERE r.state IN ('planned', 'active')"
            )
        ).all()
        live = c.execute(
            text(
                "SELECT request_id, count(*) FROM reservation "
                "WHERE state IN ('planned', 'active') GROUP BY request_id"
            )
        ).all()
        states = dict(c.execute(text("SELECT id, state FROM request")).all())
        active_res = {
            rid
            for (rid,) in c.execute(
                text("SELECT request_id FROM reservation WHERE state = 'active'")
            ).all()
        }
    out: list[str] = []
    per_node: dict[str, list[tuple[datetime, datetime, int]]] = defaultdict(list)
    per_tenant: dict[tuple[str, str], dict[int, tuple[datetime, datetime, int]]] = defaultdict(dict)
    per_guar: dict[tuple[str, str], dict[int, tuple[datetime, datetime, int]]] = defaultdict(dict)
    for _id, req, tenant, cls, gpus, start, end, kind, _state, node, node_gpus in rows:
        a, b = _dt(start), _dt(end)
        per_node[node].append((a, b, node_gpus))
        per_tenant[(tenant, cls)][req] = (a, b, gpus)
        if kind == "guaranteed":
            per_guar[(tenant, cls)][req] = (a, b, gpus)
    for node, ivs in per_node.items():
        if _peak(ivs) > nodes.get(node, 0):
            out.append(f"node {node}: {_peak(ivs)} > {nodes.get(node, 0)}")
    for key, ivs in per_tenant.items():
        limit = quotas.get(key, (0, 0))[1]
        if _peak(list(ivs.values())) > limit:
            out.append(f"limit {key}: {_peak(list(ivs.values()))} > {limit}")
    for key, ivs in per_guar.items():
        guaranteed = quotas.get(key, (0, 0))[0]
        if _peak(list(ivs.values())) > guaranteed:
            out.append(f"guaranteed {key}: {_peak(list(ivs.values()))} > {guaranteed}")
    for req, n in live:
        if n > 1:
            out.append(f"request {req}: {n} live reservations")
    for req, state in states.items():
        if (state == "active") != (req in active_res):
            out.append(f"request {req}: state {state} but open reservation {req in active_res}")
    return out
