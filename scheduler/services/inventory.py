"""Nodes discovered from a cluster: the controller's view replaces the ``kubernetes`` part of
the inventory; nodes the operator registered (``static``) are never touched here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from scheduler.domain import Principal
from scheduler.services import audit, nodes
from scheduler.tables import GpuClassRow, NodeRow


@dataclass(frozen=True, slots=True)
class DiscoveredNode:
    name: str
    gpu_class: str
    gpus: int
    schedulable: bool
    reason: str = ""


def sync_discovered(
    session: Session, who: Principal, now: datetime, found: Sequence[DiscoveredNode]
) -> bool:
    """Make the ``kubernetes`` nodes match ``found``; True if the pool changed.

    Unknown GPU classes are created. A node that left the cluster is removed, or, while
    reservations are still open on it, kept as not ready so the plan stops using it.
    """
    changed = False
    existing = {n.name: n for n in session.exec(select(NodeRow))}
    for obs in found:
        if session.get(GpuClassRow, obs.gpu_class) is None:
            session.add(GpuClassRow(name=obs.gpu_class, description="discovered", created_at=now))
            session.flush()
            audit.record(
                session,
                who,
                now,
                "gpu_class.discover",
                "gpu_class",
                obs.gpu_class,
                None,
                {"name": obs.gpu_class},
            )
        row = existing.get(obs.name)
        if row is not None and row.source == "static":
            continue  # the operator's inventory wins over discovery
        if row is None:
            row = NodeRow(
                name=obs.name,
                gpu_class=obs.gpu_class,
                gpus=obs.gpus,
                source="kubernetes",
                ready=obs.schedulable,
                unschedulable_reason=obs.reason,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            audit.record(
                session, who, now, "node.discover", "node", obs.name, None, audit.as_dict(row)
            )
            changed = True
            continue
        new = (obs.gpu_class, obs.gpus, obs.schedulable, obs.reason)
        if (row.gpu_class, row.gpus, row.ready, row.unschedulable_reason) != new:
            before = audit.as_dict(row)
            row.gpu_class, row.gpus, row.ready, row.unschedulable_reason = new
            row.updated_at = now
            session.add(row)
            session.flush()
            audit.record(
                session, who, now, "node.observe", "node", obs.name, before, audit.as_dict(row)
            )
            changed = True
    seen = {o.name for o in found}
    for row in existing.values():
        if row.source != "kubernetes" or row.name in seen:
            continue
        before = audit.as_dict(row)
        if nodes.active_gpus_on(session, row.name):
            if row.ready or row.unschedulable_reason != "left the cluster":
                row.ready, row.unschedulable_reason, row.updated_at = False, "left the cluster", now
                session.add(row)
                audit.record(
                    session, who, now, "node.observe", "node", row.name, before, audit.as_dict(row)
                )
                changed = True
        else:
            session.delete(row)
            audit.record(session, who, now, "node.remove", "node", row.name, before, None)
            changed = True
    session.flush()
    return changed
