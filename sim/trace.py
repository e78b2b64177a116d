"""The job trace: the normalised CSV ``job_id,tenant,submit_s,duration_s,gpus,gpu_type``.

Rows are read strictly: a bad row raises :class:`TraceError` naming the file, the row (as the
line number a text editor shows) and the field, so a broken trace is quick to fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("job_id", "tenant", "submit_s", "duration_s", "gpus", "gpu_type")


class TraceError(ValueError):
    """The trace cannot be used; the message names the row and the field."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of the trace: submitted ``submit_s`` after the trace starts, runs
    ``duration_s`` on ``gpus`` GPUs."""

    job_id: str
    tenant: str
    submit_s: int
    duration_s: int
    gpus: int
    gpu_type: str = "unknown"


def _int(text: str, field: str, where: str, *, minimum: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {field}: not a number: {text!r}") from None
    if value != int(value):
        raise TraceError(f"{where}: {field}: must be whole, got {text!r}")
    if value < minimum:
        raise TraceError(f"{where}: {field}: must be at least {minimum}, got {text!r}")
    return int(value)


def read_trace(path: str | Path, *, limit: int | None = None) -> list[TraceJob]:
    """The jobs of the trace at ``path``, sorted by submit time (then by row), at most
    ``limit`` of them (the first ones by submit time)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace: no such file: {path}")
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        missing = [c for c in COLUMNS if c not in header and c != "gpu_type"]
        if missing:
            raise TraceError(
                f"{path}: header: missing column(s) {', '.join(missing)} "
                f"(expected {','.join(COLUMNS)})"
            )
        for row in reader:
            where = f"{path}: row {reader.line_num}"
            if None in row or any(row.get(c) is None for c in COLUMNS if c != "gpu_type"):
                raise TraceError(f"{where}: expected {len(header)} fields")
            job_id = row["job_id"].strip()
            tenant = row["tenant"].strip()
            if not job_id:
                raise TraceError(f"{where}: job_id: empty")
            if job_id in seen:
                raise TraceError(f"{where}: job_id: {job_id!r} appears twice")
            seen.add(job_id)
            if not tenant:
                raise TraceError(f"{where}: tenant: empty")
            jobs.append(
                TraceJob(
                    job_id=job_id,
                    tenant=tenant,
                    submit_s=_int(row["submit_s"], "submit_s", where, minimum=0),
                    duration_s=_int(row["duration_s"], "duration_s", where, minimum=1),
                    gpus=_int(row["gpus"], "gpus", where, minimum=1),
                    gpu_type=(row.get("gpu_type") or "unknown").strip() or "unknown",
                )
            )
    if not jobs:
        raise TraceError(f"{path}: no jobs")
    jobs.sort(key=lambda j: j.submit_s)  # stable: equal submit times keep the file's order
    return jobs[:limit] if limit is not None else jobs


def write_trace(path: str | Path, jobs: list[TraceJob]) -> None:
    """Write ``jobs`` in the normalised CSV form (tests make their traces with it)."""
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for j in jobs:
            w.writerow([j.job_id, j.tenant, j.submit_s, j.duration_s, j.gpus, j.gpu_type])
