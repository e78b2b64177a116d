"""Trace jobs as the hub sees them: one request each, and the job runner's bookkeeping.

Shape: a job of ``gpus ≤ gpus_per_node`` GPUs is one pod on one node; a larger job is a gang
of ``ceil(gpus / gpus_per_node)`` nodes x ``gpus_per_node`` GPUs (one pod per node). A larger
job whose GPUs are not a multiple of ``gpus_per_node`` is rounded **up** to whole nodes, as
a hub that hands out whole NVLink domains for multi-node work would (none in the ITP traces).

The request asks for ``ceil(duration * overestimate)`` seconds (the wall-time limit); its pods
run for the trace duration once the controller ungates them, then succeed, and the controller
reports the request completed (early when overestimated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from sim.trace import TraceJob


class JobState(StrEnum):
    UNSUBMITTED = "unsubmitted"
    WAITING = "waiting"  # submitted, pods gated
    RUNNING = "running"  # pods bound and running
    DONE = "done"  # pods succeeded, request completed
    EXPIRED = "expired"  # the window ended before the pods finished (underestimated)
    REJECTED = "rejected"  # the hub refused it (too big for the pool, say)


@dataclass(frozen=True, slots=True)
class Shape:
    gpus: int
    gpus_per_node: int

    @property
    def pods(self) -> int:
        return self.gpus // self.gpus_per_node


def shape_of(gpus: int, gpus_per_node: int) -> Shape:
    if gpus <= gpus_per_node:
        return Shape(gpus, gpus)
    return Shape(math.ceil(gpus / gpus_per_node) * gpus_per_node, gpus_per_node)


def asked_duration(duration_s: int, overestimate: float) -> int:
    return max(1, math.ceil(duration_s * overestimate - 1e-9))


@dataclass
class Job:
    """One trace job through the simulation. Times are seconds since the trace start."""

    index: int
    trace: TraceJob
    shape: Shape
    ask_s: int
    state: JobState = JobState.UNSUBMITTED
    request_id: int | None = None
    attempt: int = 0
    pod_names: list[str] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each run
    started_at: int | None = None  # start of the current run
    finished_at: int | None = None
    preemptions: int = 0
    note: str = ""

    @property
    def tenant(self) -> str:
        return self.trace.tenant

    @property
    def submit_s(self) -> int:
        return self.trace.submit_s

    @property
    def run_s(self) -> int:
        return self.trace.duration_s

    @property
    def gpus(self) -> int:
        return self.shape.gpus

    @property
    def first_start(self) -> int | None:
        return self.runs[0][0] if self.runs else self.started_at

    @property
    def last_start(self) -> int | None:
        return self.started_at if self.started_at is not None else None
