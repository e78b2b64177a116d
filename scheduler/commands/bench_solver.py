"""``gpupool bench solver``: plan random instances, print a table, optionally write JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from solver import SolverConfig
from solver.bench import InstanceResult, run_bench

if TYPE_CHECKING:
    from scheduler.cli import Cli

HEADER = (
    f"{'#':>3} {'seed':>6} {'kind':>6} {'reqs':>6} {'time_s':>7} {'greedy_s':>8} "
    f"{'objective':>16} {'vs greedy':>9} {'gap':>7} {'placed':>6} {'preempt':>7} {'viol':>4}"
)


def _row(i: int, r: InstanceResult) -> str:
    rel = (r.objective - r.greedy_objective) / abs(r.greedy_objective or 1.0)
    gap = "-" if r.gap is None else f"{r.gap:.2%}"
    return (
        f"{i:>3} {r.seed:>6} {'replan' if r.replan else 'fresh':>6} {r.requests:>6} "
        f"{r.time_s:>7.2f} {r.greedy_time_s:>8.2f} {r.objective:>16.0f} {rel:>+9.3%} {gap:>7} "
        f"{r.placed:>6} {r.preemptions:>7} {r.violations + r.greedy_violations:>4}"
    )


def bench_solver(
    gpus: Annotated[int, typer.Option(min=1, help="GPUs in the pool.")] = 1024,
    pending: Annotated[int, typer.Option(min=1, help="Waiting requests.")] = 1000,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the first instance.")] = 0,
    instances: Annotated[int, typer.Option(min=1, help="Instances (every second a re-plan).")] = 6,
    planner: Annotated[str, typer.Option(help="Planner to measure: cpsat or greedy.")] = "cpsat",
    time_limit: Annotated[float, typer.Option(min=0.1, help="Planner time limit, s.")] = 1.0,
    workers: Annotated[int, typer.Option(min=1, help="CP-SAT workers.")] = 2,
    gap: Annotated[float, typer.Option(min=0.0, max=0.99, help="Stop at this gap.")] = 0.01,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON here.")
    ] = None,
) -> None:
    """Plan random realistic instances, validate every plan, print times and quality."""
    config = SolverConfig(
        planner=planner, time_limit_s=time_limit, workers=workers, relative_gap=gap, seed=seed
    )
    typer.echo(
        f"{gpus} GPUs, {pending} pending, {tenants} tenants, {instances} instances, "
        f"planner {planner}, time limit {time_limit}s, {workers} workers"
    )
    typer.echo(HEADER)
    count = iter(range(1, instances + 1))
    summary = run_bench(
        gpus,
        pending,
        tenants,
        seed,
        instances,
        config,
        progress=lambda r: typer.echo(_row(next(count), r)),
    )
    gap_txt = "-" if summary["gap"] is None else f"{summary['gap']:.2%}"
    typer.echo(
        f"p50 {summary['p50_s']:.2f}s  p99 {summary['p99_s']:.2f}s  worst gap {gap_txt}  "
        f"objective >= greedy on every instance: {summary['objective_ge_greedy']}  "
        f"violations {summary['violations']}"
    )
    if json_file is not None:
        json_file.write_text(json.dumps(summary, indent=2) + "\n")
        typer.echo(f"wrote {json_file}")


def register(cli: Cli) -> None:
    """Add ``gpupool bench solver``."""
    cli.bench.command("solver")(bench_solver)


if __name__ == "__main__":  # python -m scheduler.commands.bench_solver, without the full CLI
    typer.run(bench_solver)
