"""The FastAPI application: ``create_app`` wires settings, database, clock and cycle runner."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from api import errors
from api.batch import WriteBatcher
from api.deps import AppContext
from api.limits import BodySizeLimit, BucketTable, RateLimiter
from api.routers import health, inventory, plan, requests, tenants, usage
from api.scheduler_process import RemoteScheduler
from metrics.server import ServerMetrics, mount_metrics
from scheduler import migrate
from scheduler.clock import Clock, SystemClock
from scheduler.db import make_engine
from scheduler.leader import LeaderLease
from scheduler.runner import CycleRunner
from scheduler.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
gpupool lends a shared GPU pool to the tenants of an AI hub.

* **Tenants** (API key) submit requests (`POST /v1/requests`), see their planned start and why
  they wait, cancel them, and report completion.
* **Operators** (operator token) manage GPU classes, nodes, tenants, API keys, quotas, and
  read the plan and the audit log.
* **Node agents** (agent token) push GPU usage samples; tenants and operators read the usage
  accounting (`GET /v1/usage`, JSON or CSV).

Authenticate with `Authorization: Bearer <token>`. Errors are RFC 9457 problem+json.
"""


class ConfigError(RuntimeError):
    """The server refuses to start with this configuration."""


def check_settings(settings: Settings) -> None:
    if not settings.dev_mode and settings.operator_token_is_weak():
        raise ConfigError(
            "GPUPOOL_OPERATOR_TOKEN is empty or weak (needs 16+ characters, not a default); "
            "set a strong token, or run in dev mode (GPUPOOL_DEV_MODE=true, or `gpupool demo`)"
        )


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    run_cycles: bool = True,
    run_controller: bool | None = None,
    upgrade_db: bool = True,
    scheduler: RemoteScheduler | None = None,
    rate_buckets: BucketTable | None = None,
) -> FastAPI:
    """Build the app. ``run_cycles=False`` leaves cycles to the caller (tests, simulator);
    the controller runs with the cycles unless ``run_controller`` says otherwise. With a
    ``scheduler`` child, cycles and the controller run there and the app only serves.
    ``rate_buckets`` is the rate limit's table when API processes share one."""
    if scheduler is not None:
        run_cycles, run_controller = False, False
    settings = settings or Settings()
    check_settings(settings)
    engine = engine or make_engine(settings.database_url)
    clock = clock or SystemClock()
    lease = LeaderLease(engine, ttl_s=settings.lease_ttl_s) if run_cycles else None
    server_metrics = ServerMetrics(engine, clock, settings)
    runner = CycleRunner(
        engine, settings, clock, lease=lease, on_result=server_metrics.observe_cycle
    )
    server_metrics.runner = runner
    ctx = AppContext(
        settings=settings,
        engine=engine,
        clock=clock,
        runner=runner if scheduler is None else None,
        scheduler=scheduler,
        lease=lease if scheduler is None else LeaderLease(engine, scheduler.identity),
    )

    with_controller = settings.controller and (
        run_cycles if run_controller is None else run_controller
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if upgrade_db:
            migrate.upgrade(engine)
        # Plain ``def`` endpoints run in this pool; a small one spends less of the interpreter
        # lock on switching between threads than anyio's default of 40 (see settings).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        controller = start_controller(ctx) if with_controller else None
        if run_cycles:
            runner.start()
            runner.trigger("startup")
        try:
            yield
        finally:
            if ctx.writes is not None:
                ctx.writes.stop()
            if run_cycles:
                runner.stop()
            if controller is not None:
                controller.stop()

    app = FastAPI(
        title="gpupool",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    ctx.rate_limiter = RateLimiter(
        settings.rate_limit_per_s, settings.rate_limit_burst, rate_buckets
    )
    ctx.writes = WriteBatcher(engine, ctx.rate_limiter)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    errors.install(app)
    for module in (health, inventory, tenants, requests, plan, usage):
        app.include_router(module.router)
    mount_metrics(app, ctx, server_metrics)
    return app


def start_controller(ctx: AppContext) -> Any:
    """Build and start the Kubernetes controller: on the cluster of the kubeconfig or
    in-cluster config, else on the in-process simulated cluster mirroring the inventory."""
    from k8s.db_port import DatabasePort
    from k8s.embedded import mirror_static_nodes
    from k8s.factory import build_controller
    from k8s.settings import settings_from_env
    from k8s.simulated import SimulatedCluster

    s = ctx.settings
    real = s.kubeconfig is not None or s.in_cluster
    port = DatabasePort(ctx.engine, ctx.clock.now, on_change=ctx.replan, discover_nodes=real)
    controller = build_controller(
        port,
        kubeconfig=s.kubeconfig,
        in_cluster=s.in_cluster,
        context=s.kube_context,
        clock=ctx.clock.now,
        settings=settings_from_env(dict(os.environ)),
    )
    # Without a Kubernetes cluster, build_controller drives a SimulatedCluster.
    if not real:
        try:
            mirror_static_nodes(cast(SimulatedCluster, controller.cluster), ctx.engine)
        except Exception:  # the database may be down at start; every cycle mirrors again
            log.warning("could not read the inventory yet; the simulated cluster starts empty")

    def after_cycle(result: object) -> None:
        if not real:
            mirror_static_nodes(cast(SimulatedCluster, controller.cluster), ctx.engine)
        controller.wake()

    if ctx.runner is not None:
        ctx.runner.add_listener(after_cycle)
    ctx.extras["controller"] = controller
    controller.start()
    log.info(
        "controller running on %s", "a Kubernetes cluster" if real else "the simulated cluster"
    )
    return controller
