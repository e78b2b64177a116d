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
