"""``gpupool simulate``: parse and check the options, run the policies, print and write the
results. The command itself is wired in :mod:`api.cli`; this module holds its logic."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from sim.engine import SimConfig, SimResult, simulate
from sim.policies import POLICIES, UnknownPolicy
from sim.quotas import QuotaError, make_quotas
from sim.trace import TraceError, TraceJob, read_trace


class UsageError(ValueError):
    """Bad input to ``gpupool simulate``; the message names the option, row or field."""


@dataclass(frozen=True)
class Options:
    trace: str
    gpus: int
    gpus_per_node: int = 8
    policy: str = "gpupool"
    compare: str | None = None
    quotas: str = "proportional"
    cycle_s: int = 60
    overestimate: float = 1.0
    json_out: str | None = None
    plot_out: str | None = None
    solver_time_limit_s: float = 0.2
    limit_jobs: int | None = None
    progress: bool = True


def policies_of(opts: Options) -> list[str]:
    names = [p.strip() for p in opts.compare.split(",")] if opts.compare else [opts.policy]
    names = [n for n in names if n]
    if not names:
        raise UsageError("--compare: no policy named")
    for n in names:
        if n not in POLICIES:
            raise UsageError(f"policy: unknown policy {n!r} (known: {', '.join(POLICIES)})")
    if len(set(names)) != len(names):
        raise UsageError("--compare: a policy is named twice")
    return names


def check(opts: Options) -> None:
    if opts.gpus <= 0:
        raise UsageError(f"--gpus: must be positive, got {opts.gpus}")
    if opts.gpus_per_node <= 0:
        raise UsageError(f"--gpus-per-node: must be positive, got {opts.gpus_per_node}")
    if opts.gpus % opts.gpus_per_node:
        raise UsageError(
            f"--gpus: {opts.gpus} is not a multiple of --gpus-per-node ({opts.gpus_per_node})"
        )
    if opts.cycle_s <= 0:
        raise UsageError(f"--cycle-s: must be positive, got {opts.cycle_s}")
    if not opts.overestimate > 0:
        raise UsageError(f"--overestimate: must be positive, got {opts.overestimate}")
    if opts.solver_time_limit_s <= 0:
        raise UsageError(f"--solver-time-limit: must be positive, got {opts.solver_time_limit_s}")
    if opts.limit_jobs is not None and opts.limit_jobs <= 0:
        raise UsageError(f"--limit-jobs: must be positive, got {opts.limit_jobs}")


class Bar:
    """A one-line progress bar on stderr, redrawn at most a few times a second."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label, self.stream, self.enabled = label, stream or sys.stderr, enabled
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int, sim_s: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 1.0 and done < total):
            return
        self.last = now
        frac = done / total if total else 1.0
        filled = int(30 * frac)
        self.stream.write(
            f"\r{self.label:<14} [{'#' * filled}{'.' * (30 - filled)}] {100 * frac:5.1f} % "
            f"{done}/{total} jobs  sim day {sim_s / 86400:5.2f}  {now - self.t0:5.0f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def demand(jobs: Sequence[TraceJob], gpus_per_node: int) -> dict[str, float]:
    from sim.jobs import shape_of

    out: dict[str, float] = {}
    for j in jobs:
        out[j.tenant] = out.get(j.tenant, 0.0) + shape_of(j.gpus, gpus_per_node).gpus * j.duration_s
    return out


def run(opts: Options, out: TextIO | None = None) -> tuple[list[SimResult], list[dict[str, Any]]]:
    """Run the policies the options name; print the table; write the JSON and plots.
    Raises :class:`UsageError` on bad input."""
    from sim import metrics, report

    out = out or sys.stdout
    check(opts)
    names = policies_of(opts)
    try:
        jobs = read_trace(opts.trace, limit=opts.limit_jobs)
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    biggest = max(j.gpus for j in jobs)
    if -(-biggest // opts.gpus_per_node) * opts.gpus_per_node > opts.gpus and biggest > 0:
        big = next(j for j in jobs if j.gpus == biggest)
        raise UsageError(
            f"--gpus: job {big.job_id} needs {biggest} GPUs, more than the pool's {opts.gpus}"
        )
    try:
        quotas = make_quotas(opts.quotas, demand(jobs, opts.gpus_per_node), opts.gpus)
    except QuotaError as exc:
        raise UsageError(f"--quotas: {exc}") from None
    config = SimConfig(
        gpus=opts.gpus,
        gpus_per_node=opts.gpus_per_node,
        cycle_s=opts.cycle_s,
        overestimate=opts.overestimate,
        solver_time_limit_s=opts.solver_time_limit_s,
    )
    results: list[SimResult] = []
    rows: list[dict[str, Any]] = []
    for name in names:
        bar = Bar(name, enabled=opts.progress)
        try:
            result = simulate(jobs, config, quotas, name, progress=bar)
        except UnknownPolicy as exc:
            raise UsageError(str(exc)) from None
        finally:
            bar.close()
        results.append(result)
        rows.append(metrics.compute(result))
    print(report.table(rows), file=out)
    notes = rows[0]["settings"]
    print(
        f"(gpupool policy: CP-SAT {notes['solver_time_limit_s']} s per cycle, "
        f"{notes['solver_workers']} worker; cycle {opts.cycle_s} s; quotas {opts.quotas}; "
        f"bounded slowdown with a {metrics.SLOWDOWN_BOUND_S} s bound)",
        file=out,
    )
    for target, met, numbers in report.targets(rows):
        print(f"target {'met   ' if met else 'MISSED'}  {target}: {numbers}", file=out)
    if opts.json_out:
        meta = {
            "trace": opts.trace,
            "jobs": len(jobs),
            "gpus": opts.gpus,
            "gpus_per_node": opts.gpus_per_node,
            "quotas_spec": opts.quotas,
            "cycle_s": opts.cycle_s,
            "overestimate": opts.overestimate,
            "solver_time_limit_s": opts.solver_time_limit_s,
        }
        meta["targets"] = [
            {"target": t, "met": met, "numbers": n} for t, met, n in report.targets(rows)
        ]
        report.write_json(opts.json_out, rows, meta)
        print(f"wrote {opts.json_out}", file=out)
    if opts.plot_out:
        from sim.plots import write_plots

        for path in write_plots(results, opts.plot_out):
            print(f"wrote {path}", file=out)
    return results, rows
