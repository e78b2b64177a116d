"""``gpupool agent``: the GPU node agent (runs as a DaemonSet, one per GPU node).

Contributed to the ``gpupool`` CLI through the ``gpupool.commands`` entry point
(:func:`register`); ``python -m metrics.cli agent ...`` runs the same command on its own.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from metrics.agent.config import AgentConfig, AgentSetupError
from metrics.agent.runner import build_agent, serve_metrics

if TYPE_CHECKING:
    from scheduler.cli import Cli

log = logging.getLogger("metrics.agent")

ENV = "GPUPOOL_AGENT_"


def agent(
    node_name: Annotated[
        str,
        typer.Option(
            envvar=[f"{ENV}NODE_NAME", "NODE_NAME"],
            help="This node's Kubernetes name (the Hostname label). Default: the host name.",
        ),
    ] = "",
    server: Annotated[
        str | None,
        typer.Option(
            envvar=f"{ENV}SERVER",
            help="gpupool server base URL to push usage samples to; without it, metrics only.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar=f"{ENV}TOKEN_FILE",
            help=f"File holding the agent token (re-read at every push). Or set {ENV}TOKEN.",
        ),
    ] = None,
    interval: Annotated[
        float, typer.Option(envvar=f"{ENV}INTERVAL", help="Seconds between GPU readings.")
    ] = 10.0,
    push_interval: Annotated[
        float, typer.Option(envvar=f"{ENV}PUSH_INTERVAL", help="Seconds between pushes.")
    ] = 15.0,
    buffer_size: Annotated[
        int,
        typer.Option(
            envvar=f"{ENV}BUFFER_SIZE",
            help="Samples kept while the server is unreachable; then the oldest are dropped.",
        ),
    ] = 50_000,
    batch_size: Annotated[
        int, typer.Option(envvar=f"{ENV}BATCH_SIZE", help="Most samples per POST.")
    ] = 500,
    listen: Annotated[
        str, typer.Option(envvar=f"{ENV}LISTEN", help="Address of the /metrics server.")
    ] = "0.0.0.0",
    port: Annotated[
        int, typer.Option(envvar=f"{ENV}PORT", help="Port of the /metrics server (0: any).")
    ] = 9400,
    host_proc: Annotated[
        Path,
        typer.Option(
            envvar=f"{ENV}HOST_PROC",
            help="The host's /proc (NVML reports host PIDs), e.g. /host/proc in a pod.",
        ),
    ] = Path("/proc"),
    kubernetes: Annotated[
        bool,
        typer.Option(
            envvar=f"{ENV}KUBERNETES",
            help="Look up the pods behind GPU processes through the API server.",
        ),
    ] = True,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            envvar=f"{ENV}KUBECONFIG",
            help="kubeconfig file; default: in-cluster credentials, else ~/.kube/config.",
        ),
    ] = None,
    pod_refresh: Annotated[
        float,
        typer.Option(envvar=f"{ENV}POD_REFRESH", help="Seconds between lists of this node's pods."),
    ] = 30.0,
    nvml_retry: Annotated[
        float,
        typer.Option(envvar=f"{ENV}NVML_RETRY", help="Seconds between NVML initialisation tries."),
    ] = 30.0,
    log_level: Annotated[
        str, typer.Option(envvar=f"{ENV}LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the GPU node agent: NVML readings as DCGM-compatible /metrics, usage pushed to
    the server."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r} is not a log level", param_hint="--log-level")
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = AgentConfig(
            node_name=node_name or socket.gethostname(),
            server_url=server,
            token=os.environ.get(f"{ENV}TOKEN") or None,
            token_file=token_file,
            interval_s=interval,
            push_interval_s=push_interval,
            buffer_size=buffer_size,
            batch_size=batch_size,
            listen_address=listen,
            port=port,
            host_proc=host_proc,
            kubernetes=kubernetes,
            kubeconfig=kubeconfig,
            pod_refresh_s=pod_refresh,
            nvml_retry_s=nvml_retry,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run(config)


def run(config: AgentConfig) -> None:
    """Start the agent and block until SIGTERM or SIGINT, then flush and stop."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    try:
        agent_ = build_agent(config)
    except AgentSetupError as exc:
        typer.echo(f"gpupool agent: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        server = serve_metrics(agent_)
    except OSError as exc:
        typer.echo(
            f"gpupool agent: cannot serve metrics on {config.listen_address}:{config.port}: {exc}",
            err=True,
        )
        raise typer.Exit(2) from exc
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "gpupool agent on node %s: metrics on http://%s:%d/metrics, %s",
        config.node_name,
        config.listen_address,
        server.port,
        f"pushing to {config.server_url}" if config.server_url else "not pushing (no --server)",
    )
    try:
        agent_.run(stop)
    finally:
        server.stop()


def bench_agent(
    gpus: Annotated[int, typer.Option(help="GPUs on the synthetic node.")] = 8,
    mig: Annotated[int, typer.Option(help="MIG instances per GPU (0: whole GPUs).")] = 0,
    passes: Annotated[int, typer.Option(help="Sampling passes and scrapes to time.")] = 200,
    samples: Annotated[int, typer.Option(help="Samples to buffer and push.")] = 20_000,
) -> None:
    """Time the agent's own work (NVML replaced by a synthetic reader): a sampling pass,
    a /metrics scrape, memory per buffered sample, push throughput to a loopback server."""
    from metrics.agent.bench import run_bench

    for name, value in (("gpus", gpus), ("passes", passes), ("samples", samples)):
        if value < 1:
            raise typer.BadParameter(f"must be at least 1, got {value}", param_hint=f"--{name}")
    if mig < 0:
        raise typer.BadParameter(f"must be 0 or more, got {mig}", param_hint="--mig")
    for line in run_bench(gpus=gpus, mig=mig, passes=passes, samples=samples).lines():
        typer.echo(line)


def register(cli: Cli) -> None:
    """Add ``gpupool agent`` to the root of the CLI and ``gpupool bench agent``."""
    cli.root.command("agent")(agent)
    cli.bench.command("agent")(bench_agent)


def main() -> None:
    """``python -m metrics.cli agent|bench agent ...``: without the rest of the CLI."""
    app = typer.Typer(add_completion=False, no_args_is_help=True)

    @app.callback()
    def root() -> None:
        """gpupool's GPU node agent."""  # A callback keeps ``agent`` a named subcommand.

    bench = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers.")
    app.add_typer(bench, name="bench")
    app.command("agent")(agent)
    bench.command("agent")(bench_agent)
    app()


if __name__ == "__main__":
    main()
