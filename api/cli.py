"""``gpupool serve``, ``gpupool demo``, ``gpupool simulate`` and ``gpupool bench api``; the
operator/tenant helpers that call the API are in :mod:`api.client_commands`."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api import client_commands

if TYPE_CHECKING:
    from scheduler.cli import Cli


def _check_cluster_settings(settings: Any) -> None:
    """Fail before start-up, in one line, on a missing kubeconfig or a bad GPUPOOL_K8S_* value."""
    from pathlib import Path

    from k8s.settings import settings_from_env

    if settings.kubeconfig and not Path(settings.kubeconfig).expanduser().is_file():
        raise ValueError(f"kubeconfig: no such file: {settings.kubeconfig}")
    settings_from_env(dict(os.environ))


def register(cli: Cli) -> None:
    root = cli.root

    @root.command()
    def serve(
        host: Annotated[str | None, typer.Option(help="Default: GPUPOOL_HOST or 127.0.0.1")] = None,
        port: Annotated[int | None, typer.Option(help="Default: GPUPOOL_PORT or 8080")] = None,
        database_url: Annotated[
            str | None, typer.Option(help="Default: GPUPOOL_DATABASE_URL")
        ] = None,
        dev: Annotated[
            bool, typer.Option("--dev", help="Dev mode: allow a weak operator token.")
        ] = False,
        log_level: Annotated[
            str, typer.Option(envvar="GPUPOOL_LOG_LEVEL", help="debug, info, warning")
        ] = "info",
        kubeconfig: Annotated[
            str | None, typer.Option(help="Enforce plans on this cluster (default: simulated).")
        ] = None,
        context: Annotated[str | None, typer.Option(help="Kubeconfig context.")] = None,
        in_cluster: Annotated[
            bool, typer.Option("--in-cluster", help="Use the pod's service account.")
        ] = False,
        scheduler_process: Annotated[
            bool | None,
            typer.Option(
                "--scheduler-process/--single-process",
                help="Run cycles and the controller in a child process (default: "
                "GPUPOOL_SCHEDULER_PROCESS, false).",
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                min=1,
                max=64,
                help="API processes sharing the port (default: GPUPOOL_API_WORKERS, 1); "
                "above 1 implies --scheduler-process.",
            ),
        ] = None,
    ) -> None:
        """Run the API server, the scheduling cycle and the controller."""
        from api import scheduler_process as child_process
        from api.app import ConfigError, check_settings, create_app
        from api.workers import ApiWorkers, listening_socket, serve_on
        from scheduler import migrate
        from scheduler.db import make_engine
        from scheduler.settings import Settings

        overrides: dict[str, Any] = {}
        if host:
            overrides["host"] = host
        if port:
            overrides["port"] = port
        if database_url:
            overrides["database_url"] = database_url
        if dev:
            overrides["dev_mode"] = True
        if kubeconfig:
            overrides["kubeconfig"] = kubeconfig
        if context:
            overrides["kube_context"] = context
        if in_cluster:
            overrides["in_cluster"] = True
        if scheduler_process is not None:
            overrides["scheduler_process"] = scheduler_process
        if workers is not None:
            overrides["api_workers"] = workers
        settings = Settings(**overrides)
        if settings.api_workers > 1:
            if scheduler_process is False:
                typer.echo(
                    "gpupool: error: --workers above 1 needs the scheduler process "
                    "(one controller and one cycle loop for all API processes); "
                    "drop --single-process",
                    err=True,
                )
                raise typer.Exit(2)
            settings = settings.model_copy(update={"scheduler_process": True})
        try:
            _check_cluster_settings(settings)
        except ValueError as exc:
            typer.echo(f"gpupool: error: {exc}", err=True)
            raise typer.Exit(2) from exc
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            check_settings(settings)
        except ConfigError as exc:
            typer.echo(f"gpupool: error: {exc}", err=True)
            raise typer.Exit(2) from exc
        url = f"http://{settings.host}:{settings.port}"
        try:
            sock = listening_socket(settings.host, settings.port, shared=settings.api_workers > 1)
        except OSError as exc:
            typer.echo(f"gpupool: error: cannot listen on {url}: {exc}", err=True)
            raise typer.Exit(2) from exc
        if not settings.scheduler_process:
            app = create_app(settings)
            typer.echo(f"gpupool serving on {url}  (API docs: {url}/docs)")
            serve_on(app, sock, log_level)
            return
        # The API here, cycles and the controller in a child process (see
        # api/scheduler_process.py). Migrate first, so the child starts on the current schema.
        engine = make_engine(settings.database_url)
        migrate.upgrade(engine)
        handle = child_process.spawn(settings, log_level)
        stop = threading.Event()
        threading.Thread(
            target=child_process.supervise,
            args=(handle, settings, log_level, stop),
            name="gpupool-supervisor",
            daemon=True,
        ).start()
        extra = ApiWorkers(
            settings.api_workers - 1, settings, handle.identity, handle.wake, log_level
        )
        threading.Thread(
            target=extra.supervise, args=(stop,), name="gpupool-api-supervisor", daemon=True
        ).start()
        if not extra.wait_listening(timeout=120):
            logging.getLogger(__name__).warning(
                "not every API process listens after 120 s; serving anyway"
            )
        try:
            app = create_app(
                settings,
                engine=engine,
                upgrade_db=False,
                scheduler=handle,
                rate_buckets=extra.rate_buckets,
            )
            processes = f" with {settings.api_workers} API processes" * (settings.api_workers > 1)
            typer.echo(f"gpupool serving on {url}{processes}  (API docs: {url}/docs)")
            serve_on(app, sock, log_level)
        finally:
            stop.set()
            extra.stop()
            process = handle.process
            if process is not None and process.is_alive():
                process.terminate()
                process.join(20)
                if process.is_alive():
                    process.kill()

    @root.command()
    def demo(
        port: Annotated[int, typer.Option(help="Port of the demo server.")] = 8080,
        database: Annotated[
            str, typer.Option(help="SQLite file, recreated each run.")
        ] = "gpupool-demo.db",
        keep_serving: Annotated[
            bool, typer.Option(help="Keep the server up after the workload, for /docs.")
        ] = True,
        speed: Annotated[
            float, typer.Option(help="Scale the workload's durations (2 = twice as slow).")
        ] = 1.0,
    ) -> None:
        """Start a server on a demo pool, submit a scripted workload through the API, and show
        requests being planned, started and finished."""
        from api.demo import run_demo

        sys.exit(run_demo(port=port, database=database, keep_serving=keep_serving, speed=speed))

    @root.command()
    def simulate(
        trace: Annotated[str, typer.Option(help="Job trace CSV (job_id,tenant,submit_s,...).")],
        gpus: Annotated[int, typer.Option(help="GPUs in the pool.")],
        gpus_per_node: Annotated[int, typer.Option(help="GPUs per node.")] = 8,
        policy: Annotated[
            str, typer.Option(help="gpupool, fifo-backfill, kueue or drf.")
        ] = "gpupool",
        compare: Annotated[
            str | None, typer.Option(help="Several policies, comma-separated (overrides --policy).")
        ] = None,
        quotas: Annotated[
            str, typer.Option(help="proportional, equal, or a JSON/CSV file of quotas.")
        ] = "proportional",
        cycle_s: Annotated[int, typer.Option(help="Cycle boundary in seconds.")] = 60,
        overestimate: Annotated[
            float, typer.Option(help="Requested duration = trace duration x this.")
        ] = 1.0,
        json_out: Annotated[str | None, typer.Option("--json", help="Write metrics JSON.")] = None,
        plot: Annotated[
            str | None, typer.Option(help="Write PNGs: OUT.png (usage), OUT-wait-cdf.png.")
        ] = None,
        solver_time_limit: Annotated[
            float, typer.Option(help="CP-SAT seconds per cycle for the gpupool policy.")
        ] = 0.2,
        limit_jobs: Annotated[
            int | None, typer.Option(help="Replay only the first N jobs of the trace.")
        ] = None,
        progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    ) -> None:
        """Replay a job trace in simulated time through the real cycle and controller, under
        gpupool's planner or a baseline, and print the metrics table."""
        from sim.cli import Options, UsageError
        from sim.cli import run as run_simulation

        opts = Options(
            trace=trace,
            gpus=gpus,
            gpus_per_node=gpus_per_node,
            policy=policy,
            compare=compare,
            quotas=quotas,
            cycle_s=cycle_s,
            overestimate=overestimate,
            json_out=json_out,
            plot_out=plot,
            solver_time_limit_s=solver_time_limit,
            limit_jobs=limit_jobs,
            progress=progress,
        )
        try:
            run_simulation(opts)
        except UsageError as exc:
            typer.echo(f"gpupool simulate: error: {exc}", err=True)
            raise typer.Exit(2) from None

    @cli.bench.command("api")
    def bench_api(
        backend: Annotated[str, typer.Option(help="sqlite or postgresql")] = "sqlite",
        postgres_url: Annotated[
            str, typer.Option(help="Admin URL; a fresh database is created per phase.")
        ] = "postgresql://postgres@127.0.0.1:5432/postgres",
        tenants: Annotated[int, typer.Option(help="Concurrent tenants (mixed, burst).")] = 50,
        seconds: Annotated[
            float, typer.Option(min=0, help="Length of the mixed load (0: skip).")
        ] = 60.0,
        burst_seconds: Annotated[
            float, typer.Option(min=0, help="Length of the submit burst (0: skip).")
        ] = 20.0,
        rate: Annotated[
            float, typer.Option(min=0, help="Submits per second of the open-loop phase (0: skip).")
        ] = 300.0,
        rate_seconds: Annotated[float, typer.Option(help="Length of the open-loop phase.")] = 20.0,
        rate_warmup: Annotated[
            float,
            typer.Option(
                min=0, help="Seconds at the same rate before the open-loop phase is measured."
            ),
        ] = 5.0,
        workers: Annotated[
            int, typer.Option(min=1, max=64, help="API processes of the server (serve --workers).")
        ] = 1,
        gpus: Annotated[int, typer.Option(help="Pool size (8-GPU nodes).")] = 1024,
        plan_requests: Annotated[
            int, typer.Option(min=0, help="Requests of the planning run (0: skip).")
        ] = 15000,
        plan_tenants: Annotated[int, typer.Option(help="Tenants of the planning run.")] = 30,
        json_out: Annotated[
            str | None, typer.Option("--json", help="Write the report here.")
        ] = None,
    ) -> None:
        """The API under load against a real server process: throughput, latency at a fixed
        submit rate, and how soon 15,000 requests are all planned."""
        import json as json_module

        from api import bench

        if backend not in ("sqlite", "postgresql"):
            raise typer.BadParameter("must be sqlite or postgresql", param_hint="--backend")
        report = bench.main(
            backend=backend,
            pg_admin_url=postgres_url,
            tenants=tenants,
            seconds=seconds,
            burst_seconds=burst_seconds,
            rate=rate,
            rate_seconds=rate_seconds,
            rate_warmup_s=rate_warmup,
            workers=workers,
            gpus=gpus,
            plan_requests=plan_requests,
            plan_tenants=plan_tenants,
        )
        if json_out:
            with open(json_out, "w") as fh:
                json_module.dump(report, fh, indent=2, default=str)

    client_commands.register(cli)
