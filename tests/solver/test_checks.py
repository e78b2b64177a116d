"""Malformed problems are refused with an error naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from solver import Node, ProblemError, Quota, Running, SolverConfig, Tenant, plan
from solver.model import ReservationKind
from tests.solver.factory import NOW, nodes, problem, req, tenant


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"requests": (req(1, gpus=6, per_node=4),)}, "gpus_per_node"),
        ({"requests": (req(1, hours=0),)}, "duration_s"),
        ({"requests": (req(1), req(1))}, "appears twice"),
        ({"requests": (req(1, "ghost"),)}, "tenant 'ghost'"),
        ({"nodes": (Node("n0", "H100", 8), Node("n0", "H100", 8))}, "node 'n0'"),
        ({"nodes": (Node("n0", "H100", 0),)}, "gpus must be positive"),
        ({"tenants": {"a": Tenant("a", {"H100": Quota(9, 8)})}}, "exceeds limit"),
        ({"tenants": {"a": Tenant("b")}}, "different name"),
        ({"horizon_s": 0}, "horizon_s"),
        (
            {
                "running": (
                    Running(5, "a", "H100", (("n0", 8),), NOW, NOW, ReservationKind.BORROWED),
                )
            },
            "end must be after start",
        ),
    ],
)
def test_bad_input_names_the_field(change: dict[str, object], message: str) -> None:
    good = problem(nodes(1), [tenant("a")], [req(1)])
    bad = dataclasses.replace(good, **change)  # type: ignore[arg-type]
    with pytest.raises(ProblemError, match=message):
        plan(bad)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="planner"):
        SolverConfig(planner="magic")
    with pytest.raises(ValueError, match="time_limit_s"):
        SolverConfig(time_limit_s=0)
