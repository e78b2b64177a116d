"""The controller's contribution to the ``gpupool`` CLI: ``gpupool bench k8s``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from scheduler.cli import Cli


def register(cli: Cli) -> None:
    """Add the k8s commands to the CLI (entry point ``gpupool.commands: k8s``)."""

    @cli.bench.command("k8s")
    def bench_k8s(
        pods: int = typer.Option(64, min=1, help="Pods of the request (one GPU each)."),
        nodes: int = typer.Option(8, min=1, help="Nodes the reservation spans."),
        gpus_per_pod: int = typer.Option(1, min=1, help="GPUs each pod asks for."),
        workers: int = typer.Option(8, min=1, help="Pod writes the controller keeps in flight."),
        rounds: int = typer.Option(3, min=1, help="Rounds, each on a fresh fake API server."),
    ) -> None:
        """Reservation start -> all pods ungated, end -> all evicted, against the fake API."""
        from k8s.bench import run_round, run_simulated, summary

        typer.echo(
            f"k8s bench: {pods} pods x {gpus_per_pod} GPU on {nodes} nodes, "
            f"{workers} write workers, {rounds} rounds (loopback fake API server)"
        )
        results = []
        for i in range(rounds):
            r = run_round(pods, gpus_per_pod, nodes, workers)
            results.append(r)
            typer.echo(
                f"  round {i + 1}: start->all ungated {r.admit_s * 1000:8.1f} ms   "
                f"end->all evicted {r.evict_s * 1000:8.1f} ms   "
                f"end->all gone {r.gone_s * 1000:8.1f} ms   "
                f"({r.requests} API requests)"
            )
        for name, (median, low, high) in summary(results).items():
            typer.echo(
                f"  {name:8s} median {median * 1000:8.1f} ms  "
                f"(min {low * 1000:.1f}, max {high * 1000:.1f})"
            )
        sim = run_simulated(pods, gpus_per_pod, nodes)
        typer.echo(
            f"simulated cluster, one pass: admit {sim.admit_s * 1000:.1f} ms, "
            f"evict {sim.evict_s * 1000:.1f} ms"
        )
