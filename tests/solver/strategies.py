"""Hypothesis strategies for small random solver problems that exercise every rule."""

from __future__ import annotations

from hypothesis import strategies as st

from solver import Assignment, Node, Problem, Quota, Request, ReservationKind, Running, Tenant
from tests.solver.factory import NOW

CLASSES = ("H100", "A100")
H = 3600


@st.composite
def problems(draw: st.DrawFn, max_requests: int = 8) -> Problem:
    """A pool of 1-5 nodes, 1-3 tenants, up to ``max_requests`` requests, running work."""
    node_list: list[Node] = []
    for i in range(draw(st.integers(1, 5))):
        node_list.append(
            Node(
                f"n{i}",
                "H100" if i < 2 else draw(st.sampled_from(CLASSES)),
                draw(st.sampled_from((4, 8, 8))) if i < 2 else draw(st.sampled_from((2, 4, 8))),
                schedulable=draw(st.booleans()) or i == 0,
            )
        )
    tenants: dict[str, Tenant] = {}
    for t in range(draw(st.integers(1, 3))):
        quotas: dict[str, Quota] = {}
        for cls in CLASSES:
            if draw(st.integers(0, 9)) == 0:
                continue
            limit = draw(st.integers(0, 32))
            budget = draw(st.one_of(st.none(), st.integers(0, 200).map(lambda h: h * 3600.0)))
            quotas[cls] = Quota(draw(st.integers(0, limit)), limit, budget)
        name = f"t{t}"
        usage = float(draw(st.integers(0, 10**6)))
        tenants[name] = Tenant(
            name, quotas, weight=draw(st.sampled_from((0.5, 1.0, 2.0))), usage=usage
        )
    names = sorted(tenants)

    running: list[Running] = []
    busy_until: dict[str, int] = {}
    for rid in range(100, 100 + draw(st.integers(0, 4))):
        node = draw(st.sampled_from(node_list))
        start = NOW - draw(st.integers(60, 5 * H))
        start = max(start, busy_until.get(node.name, start))
        end = max(start + 60, NOW + draw(st.integers(1, 48)) * H // 2)
        busy_until[node.name] = end
        tenant = draw(st.sampled_from(names))
        kind = draw(st.sampled_from((*ReservationKind, ReservationKind.BORROWED)))
        running.append(
            Running(
                rid,
                tenant,
                node.gpu_class,
                ((node.name, draw(st.integers(1, node.gpus))),),
                min(start, NOW),
                end,
                kind,
                preemptible=draw(st.integers(0, 3)) > 0,
            )
        )

    requests: list[Request] = []
    previous: dict[int, Assignment] = {}
    for rid in range(draw(st.integers(1, max_requests))):
        per_node = draw(st.sampled_from((1, 2, 4, 4, 8)))
        duration = draw(st.sampled_from((600, 1800, H, 4 * H, 12 * H, 40 * H)))
        not_before = draw(st.one_of(st.none(), st.integers(0, 72).map(lambda h: NOW + h * H)))
        slack_h = draw(st.one_of(st.none(), st.integers(1, 96)))
        deadline = None if slack_h is None else NOW + slack_h * H + duration
        r = Request(
            id=rid,
            tenant=draw(st.sampled_from(names)),
            gpu_class=draw(
                st.sampled_from(("H100", "H100", "A100", "B200" if rid == 7 else "H100"))
            ),
            gpus=per_node * draw(st.sampled_from((1, 1, 2, 3))),
            gpus_per_node=per_node,
            duration_s=duration,
            submitted_at=NOW - draw(st.integers(0, 10 * H)),
            not_before=not_before,
            deadline=deadline,
            priority=draw(st.integers(-1, 3)),
            preemptible=draw(st.integers(0, 3)) > 0,
        )
        requests.append(r)
        if draw(st.integers(0, 3)) == 0:
            node = draw(st.sampled_from(node_list))
            start = NOW + draw(st.integers(0, 20)) * 300
            previous[rid] = Assignment(
                rid, ((node.name, per_node),), start, start + duration, ReservationKind.BORROWED
            )
    horizon = draw(st.sampled_from((6 * H, 2 * 24 * H, 7 * 24 * H)))
    return Problem(
        now=NOW,
        nodes=tuple(node_list),
        tenants=tenants,
        requests=tuple(requests),
        running=tuple(running),
        previous=previous,
        horizon_s=horizon,
    )
