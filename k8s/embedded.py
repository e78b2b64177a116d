"""The embedded default: the controller on an in-process simulated cluster whose nodes mirror
the operator's static inventory."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from k8s.simulated import SimNode, SimulatedCluster
from scheduler.db import session_scope
from scheduler.tables import NodeRow


def _ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def mirror_static_nodes(cluster: SimulatedCluster, engine: Engine) -> None:
    """Add the inventory's new nodes to the simulated cluster and copy their readiness."""
    with session_scope(engine, write=False) as s:
        rows = list(s.exec(select(NodeRow)))
    items, _ = cluster.store.list("nodes", "")
    present = {n["metadata"]["name"]: _ready(n) for n in items}
    for row in rows:
        if row.name not in present:
            cluster.add_node(SimNode(row.name, row.gpu_class, row.gpus))
            present[row.name] = True
        if present[row.name] != row.ready:
            cluster.set_node_ready(row.name, row.ready)
