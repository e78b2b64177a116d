"""Scheduling policies for the simulator, each a ``plan_fn(Problem, SolverConfig) -> Plan``
handed to :func:`scheduler.cycle.run_cycle`:

- ``gpupool``: the hub's own planner, :func:`solver.plan` (greedy first, then CP-SAT);
- ``fifo-backfill``: Slurm-style, one FIFO queue with EASY backfill (:mod:`.fifo_backfill`);
- ``kueue``: Kueue-style ClusterQueues in one cohort (:mod:`.kueue`);
- ``drf``: weighted max-min fair sharing of GPUs (:mod:`.drf`).

Every plan is checked by :func:`solver.validate` before it is applied, like the server's.
"""

from __future__ import annotations

import solver
from scheduler.cycle import PlanFn

POLICIES: tuple[str, ...] = ("gpupool", "fifo-backfill", "kueue", "drf")


class UnknownPolicy(ValueError):
    """A policy name the simulator does not know."""


def policy_fn(name: str) -> PlanFn:
    """The planning function of the policy called ``name``."""
    if name == "gpupool":
        return solver.plan
    if name == "fifo-backfill":
        from sim.policies.fifo_backfill import plan_fifo_backfill

        return plan_fifo_backfill
    if name == "kueue":
        from sim.policies.kueue import plan_kueue

        return plan_kueue
    if name == "drf":
        from sim.policies.drf import plan_drf

        return plan_drf
    raise UnknownPolicy(f"policy: unknown policy {name!r} (known: {', '.join(POLICIES)})")
