"""Pictures of a comparison (matplotlib, Agg backend, PNG):

- GPUs in use per tenant over time (stacked), against the pool's capacity, one panel per
  policy;
- the wait-time CDF of each policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sim.engine import SimResult
from sim.jobs import JobState

BIN_S = 600


def usage_by_tenant(result: SimResult, end: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean GPUs in use per tenant in bins of ``BIN_S`` seconds from 0 to ``end``."""
    bins = max(1, -(-end // BIN_S))
    out: dict[str, np.ndarray] = {}
    for tenant in sorted({j.tenant for j in result.jobs}):
        diff = np.zeros(bins * BIN_S + 1, dtype=np.int64)
        for j in result.jobs:
            if j.tenant != tenant:
                continue
            for s, e in j.runs:
                diff[min(s, len(diff) - 1)] += j.gpus
                diff[min(e, len(diff) - 1)] -= j.gpus
        level = np.cumsum(diff)[: bins * BIN_S]
        out[tenant] = level.reshape(bins, BIN_S).mean(axis=1)
    return np.arange(bins) * BIN_S / 3600.0, out


def waits(result: SimResult) -> np.ndarray:
    return np.sort(
        np.asarray(
            [j.runs[-1][0] - j.submit_s for j in result.jobs if j.state is JobState.DONE],
            dtype=float,
        )
    )


def plot_usage(results: Sequence[SimResult], path: Path) -> None:
    end = max(max((j.finished_at or 0 for j in r.jobs), default=0) for r in results)
    fig, axes = plt.subplots(
        len(results), 1, figsize=(11, 2.6 * len(results) + 0.6), sharex=True, squeeze=False
    )
    for ax, r in zip(axes[:, 0], results, strict=True):
        hours, series = usage_by_tenant(r, end)
        ax.stackplot(hours, *series.values(), labels=list(series), step="post", alpha=0.85)
        ax.axhline(r.config.gpus, color="black", lw=1, ls="--", label="capacity")
        ax.set_ylabel("GPUs in use")
        ax.set_title(r.policy, loc="left", fontsize=10)
        ax.set_ylim(0, r.config.gpus * 1.08)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=len(results[0].quotas) + 1)
    axes[-1, 0].set_xlabel("hours since the trace start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_wait_cdf(results: Sequence[SimResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        w = waits(r)
        if len(w) == 0:
            continue
        ax.step(np.maximum(w, 1.0), np.arange(1, len(w) + 1) / len(w), where="post", label=r.policy)
    ax.set_xscale("log")
    ax.set_xlabel("wait before the completing run starts (s, log; 0 shown at 1 s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(results: Sequence[SimResult], out: str | Path) -> list[Path]:
    """GPUs in use per tenant (``out``) and the wait-time CDF (``<stem>-wait-cdf.png`` beside
    it); returns the paths written."""
    usage = Path(out)
    usage.parent.mkdir(parents=True, exist_ok=True)
    cdf = usage.with_name(f"{usage.stem}-wait-cdf{usage.suffix or '.png'}")
    plot_usage(results, usage)
    plot_wait_cdf(results, cdf)
    return [usage, cdf]
