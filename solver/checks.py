"""Input checks: a malformed :class:`~solver.model.Problem` is refused with a clear error.

The scheduler validates what tenants send, so these errors mean a bug upstream; they name the
object and the field so that the bug is quick to find.
"""

from __future__ import annotations

from solver.model import Problem


class ProblemError(ValueError):
    """A problem the planners cannot work on; the message names the field and the reason."""


def check_problem(problem: Problem) -> None:
    """Raise :class:`ProblemError` for the first malformed field of ``problem``."""
    if problem.horizon_s <= 0:
        raise ProblemError(f"horizon_s: must be positive, got {problem.horizon_s}")
    if problem.resolution_s <= 0:
        raise ProblemError(f"resolution_s: must be positive, got {problem.resolution_s}")
    if problem.min_runtime_s < 0:
        raise ProblemError(f"min_runtime_s: must not be negative, got {problem.min_runtime_s}")
    names: set[str] = set()
    for node in problem.nodes:
        if node.name in names:
            raise ProblemError(f"node {node.name!r}: name appears twice")
        names.add(node.name)
        if node.gpus <= 0:
            raise ProblemError(f"node {node.name!r}: gpus must be positive, got {node.gpus}")
    for name, tenant in problem.tenants.items():
        if tenant.name != name:
            raise ProblemError(f"tenant {name!r}: keyed under a different name {tenant.name!r}")
        if tenant.weight <= 0:
            raise ProblemError(f"tenant {name!r}: weight must be positive, got {tenant.weight}")
        if tenant.usage < 0:
            raise ProblemError(f"tenant {name!r}: usage must not be negative")
        for cls, quota in tenant.quotas.items():
            where = f"tenant {name!r} quota {cls!r}"
            if quota.guaranteed < 0 or quota.limit < 0:
                raise ProblemError(f"{where}: guaranteed and limit must not be negative")
            if quota.guaranteed > quota.limit:
                raise ProblemError(
                    f"{where}: guaranteed ({quota.guaranteed}) exceeds limit ({quota.limit})"
                )
            if quota.budget_gpu_s is not None and quota.budget_gpu_s < 0:
                raise ProblemError(f"{where}: budget_gpu_s must not be negative")
    ids: set[int] = set()
    for req in problem.requests:
        where = f"request {req.id}"
        if req.id in ids:
            raise ProblemError(f"{where}: id appears twice")
        ids.add(req.id)
        if req.tenant not in problem.tenants:
            raise ProblemError(f"{where}: tenant {req.tenant!r} is not in the problem")
        if req.gpus_per_node <= 0:
            raise ProblemError(f"{where}: gpus_per_node must be positive")
        if req.gpus <= 0 or req.gpus % req.gpus_per_node:
            raise ProblemError(
                f"{where}: gpus ({req.gpus}) must be a positive multiple of "
                f"gpus_per_node ({req.gpus_per_node})"
            )
        if req.duration_s <= 0:
            raise ProblemError(f"{where}: duration_s must be positive, got {req.duration_s}")
    running_ids: set[int] = set()
    for run in problem.running:
        where = f"running reservation {run.request_id}"
        if run.request_id in ids or run.request_id in running_ids:
            raise ProblemError(f"{where}: request id also appears elsewhere in the problem")
        running_ids.add(run.request_id)
        if run.end <= run.start:
            raise ProblemError(f"{where}: end must be after start")
        if not run.allocation:
            raise ProblemError(f"{where}: allocation is empty")
        # A node may have left the pool while a reservation on it is still open; such an entry
        # simply holds no capacity of the pool, so unknown node names are accepted.
        for node_name, gpus in run.allocation:
            if gpus <= 0:
                raise ProblemError(f"{where}: {gpus} GPUs on {node_name!r}")
