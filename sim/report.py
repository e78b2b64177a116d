"""The summary table (one column per policy) and the JSON document of a simulation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROWS: tuple[tuple[str, str, str], ...] = (
    # key, label, format
    ("jobs", "jobs", "d"),
    ("completed", "completed", "d"),
    ("gpus", "gpus", "d"),
    ("makespan_s", "makespan_s", "d"),
    ("utilization", "utilization", "pct"),
    ("mean_wait_s", "mean wait_s", "s"),
    ("p50_wait_s", "p50 wait_s", "s"),
    ("p95_wait_s", "p95 wait_s", "s"),
    ("p99_wait_s", "p99 wait_s", "s"),
    ("mean_jct_s", "mean JCT_s", "s"),
    ("mean_bounded_slowdown", "mean bounded slowdown", "f2"),
    ("jain_fairness", "jain_fairness", "f3"),
    ("guarantee_shortfall_gpu_hours", "guarantee_shortfall_gpu_hours", "f1"),
    ("preemptions", "preemptions", "d"),
    ("eta_mae_s", "eta_mae_s", "s"),
    ("solver_p50_s", "solver p50_s", "f3"),
    ("solver_p99_s", "solver p99_s", "f3"),
    ("cycles", "cycles", "d"),
    ("wall_s", "wall_s", "f0"),
)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "d":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "s":
        return f"{value:,.0f}"
    return f"{value:.{kind[1:]}f}"


def table(rows: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """Metrics side by side: one column per policy, tenants' mean waits at the end."""
    header = ["metric", *[r["policy"] for r in rows]]
    lines: list[list[str]] = [
        [label, *[_fmt(r.get(key), kind) for r in rows]] for key, label, kind in ROWS
    ]
    tenants = sorted({t for r in rows for t in r.get("tenant_mean_wait_s", {})})
    for t in tenants:
        lines.append(
            [f"mean wait_s {t}", *[_fmt(r["tenant_mean_wait_s"].get(t), "s") for r in rows]]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * len(rows)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line) for line in [header, *lines])


def write_json(path: str | Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``{"trace": ..., "policies": [metrics, ...]}`` (one entry per policy)."""
    doc = {**meta, "policies": list(rows)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def targets(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's targets for the gpupool column against the best baseline: (target, met,
    the numbers). Empty unless gpupool and at least one baseline were run."""
    ours = next((r for r in rows if r["policy"] == "gpupool"), None)
    base = [r for r in rows if r["policy"] != "gpupool"]
    if ours is None or not base:
        return []
    out: list[tuple[str, bool, str]] = []
    waits = [r for r in base if r.get("mean_wait_s") is not None]
    if waits and ours.get("mean_wait_s") is not None:
        best = min(waits, key=lambda r: r["mean_wait_s"])
        ratio = ours["mean_wait_s"] / best["mean_wait_s"] if best["mean_wait_s"] else float("inf")
        out.append(
            (
                "mean wait <= 0.7 x best baseline",
                ratio <= 0.7,
                f"{ours['mean_wait_s']:,.0f} s vs {best['policy']} {best['mean_wait_s']:,.0f} s "
                f"(x{ratio:.2f})",
            )
        )
    short = ours["guarantee_shortfall_gpu_hours"]
    out.append(("guarantee shortfall 0", short == 0, f"{short:.1f} GPU-h"))
    utils = [r for r in base if r.get("utilization") is not None]
    if utils and ours.get("utilization") is not None:
        best = max(utils, key=lambda r: r["utilization"])
        gap = 100 * (best["utilization"] - ours["utilization"])
        out.append(
            (
                "utilisation within 1 point of the best baseline",
                gap <= 1.0,
                f"{100 * ours['utilization']:.1f} % vs {best['policy']} "
                f"{100 * best['utilization']:.1f} %",
            )
        )
    fair = [r for r in base if r.get("jain_fairness") is not None]
    if fair and ours.get("jain_fairness") is not None:
        best = max(fair, key=lambda r: r["jain_fairness"])
        out.append(
            (
                "Jain fairness >= the best baseline's",
                ours["jain_fairness"] >= best["jain_fairness"],
                f"{ours['jain_fairness']:.3f} vs {best['policy']} {best['jain_fairness']:.3f}",
            )
        )
    return out
