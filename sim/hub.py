"""The simulated hub: a fresh SQLite database migrated with the project's migrations, the pool,
tenants and quotas created through the scheduler's services (as the API would), and the real
controller on the in-process simulated cluster, all on one injected :class:`ManualClock`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from k8s.controller import Controller
from k8s.db_port import DatabasePort
from k8s.settings import ControllerSettings
from k8s.simulated import SimNode, SimulatedCluster
from scheduler import migrate
from scheduler.clock import ManualClock
from scheduler.db import make_engine, session_scope
from scheduler.domain import OPERATOR
from scheduler.services import gpu_classes, nodes, quotas, tenants
from scheduler.settings import Settings
from sim.quotas import TenantQuota

#: Simulated time starts on a Monday at midnight UTC; trace second 0 is this moment.
EPOCH = datetime(2030, 1, 7, tzinfo=UTC)
GPU_CLASS = "GPU"


@dataclass
class Hub:
    """Everything one simulation runs on."""

    engine: Engine
    settings: Settings
    clock: ManualClock
    cluster: SimulatedCluster
    controller: Controller
    workdir: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def close(self) -> None:
        self.controller.stop()
        self.engine.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()


def build_hub(
    *,
    node_count: int,
    gpus_per_node: int,
    quota: Mapping[str, TenantQuota],
    settings: Mapping[str, object],
    weights: Mapping[str, float] | None = None,
    eviction_grace_s: int = 30,
) -> Hub:
    """A migrated database with ``node_count`` nodes of ``gpus_per_node`` GPUs of one class,
    a tenant per entry of ``quota`` and a controller on the simulated cluster."""
    tmp = tempfile.TemporaryDirectory(prefix="gpupool-sim-")
    workdir = Path(tmp.name)
    conf = Settings(
        database_url=f"sqlite:///{workdir / 'sim.db'}",
        dev_mode=True,
        controller=True,
        **settings,  # type: ignore[arg-type]
    )
    engine = make_engine(conf.database_url)
    migrate.upgrade(engine)
    clock = ManualClock(EPOCH)
    now = clock.now()
    names = [f"node-{i:03d}" for i in range(node_count)]
    with session_scope(engine) as s:
        gpu_classes.create(s, OPERATOR, now, name=GPU_CLASS, description="simulated")
        for name in names:
            nodes.create(s, OPERATOR, now, name=name, gpu_class=GPU_CLASS, gpus=gpus_per_node)
    with session_scope(engine) as s:
        for tenant in sorted(quota):
            tenants.create(s, OPERATOR, now, name=tenant, weight=(weights or {}).get(tenant, 1.0))
        for tenant, q in sorted(quota.items()):
            quotas.set_quota(
                s, OPERATOR, now, tenant, GPU_CLASS, guaranteed=q.guaranteed, limit=q.limit
            )
    cluster = SimulatedCluster(
        [SimNode(n, GPU_CLASS, gpus_per_node) for n in names], clock=clock.now
    )
    for tenant in quota:
        cluster.ensure_namespace(tenant, tenant)
    # The embedded default's wiring (api.app.start_controller): the inventory is static, so
    # the controller does not discover nodes; in one process there is no leader election.
    port = DatabasePort(engine, clock.now, discover_nodes=False)
    controller = Controller(
        port,
        cluster,
        clock.now,
        ControllerSettings(
            leader_election=False,
            create_namespaces=False,
            write_workers=1,
            eviction_grace_s=eviction_grace_s,
        ),
    )
    return Hub(engine, conf, clock, cluster, controller, workdir, tmp)
