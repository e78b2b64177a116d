"""The event loop: replays a trace in simulated time through the real cycle and controller.

Time jumps from event to event instead of ticking. A job's submit happens at its exact trace
time (through the requests service, as the API does). A cycle runs at the next cycle boundary
(a multiple of ``cycle_s`` after the trace start) at or after the earliest of: a submit, a job's
pods succeeding, a planned start, a reservation's end — what the server's runner wakes on.
At each boundary:

1. a controller pass: the simulated kubelet finishes pods whose run time is over, and the
   controller reports their requests completed;
2. :func:`scheduler.cycle.run_cycle` with the policy as ``plan_fn`` (advance → snapshot →
   plan → validate → apply);
3. a controller pass (ungate pods of opened reservations, evict preempted or ended ones) and a
   kubelet step (bind ungated pods, remove evicted ones);
4. the job runner: jobs whose pods now run start their clock; a preempted job (its request is
   pending again, requeued) gets fresh gated pods and restarts from scratch when it runs again.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from sqlmodel import col, select

from k8s.apisim.store import parse_timestamp
from scheduler.clock import to_epoch
from scheduler.cycle import PlanFn, run_cycle
from scheduler.db import session_scope
from scheduler.domain import Principal, Role
from scheduler.errors import GpupoolError
from scheduler.services import submit as submit_service
from scheduler.tables import RequestEventRow, RequestRow
from sim.hub import EPOCH, GPU_CLASS, Hub, build_hub
from sim.jobs import Job, JobState, asked_duration, shape_of
from sim.quotas import TenantQuota
from sim.trace import TraceJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimConfig:
    """One simulation run. ``solver_time_limit_s`` is the CP-SAT time per cycle of the
    gpupool policy (the server's default is 1 s; a trace of thousands of cycles needs less)."""

    gpus: int
    gpus_per_node: int = 8
    cycle_s: int = 60
    overestimate: float = 1.0
    solver_time_limit_s: float = 0.2
    solver_workers: int = 1
    min_runtime_s: int = 600
    eviction_grace_s: int = 30

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node


@dataclass
class CycleStat:
    at: int  # seconds since the trace start
    solve_s: float
    decide_s: float
    wall_s: float
    waiting: int
    placed: int
    activated: int
    preempted: int
    fallback: str | None


@dataclass
class SimResult:
    policy: str
    config: SimConfig
    quotas: dict[str, TenantQuota]
    jobs: list[Job]
    cycles: list[CycleStat] = field(default_factory=list)
    promises: dict[int, int] = field(default_factory=dict)  # job index -> first promised start
    wall_s: float = 0.0
    end_s: int = 0
    settings: dict[str, object] = field(default_factory=dict)


Progress = Callable[[int, int, int], None]  # (jobs finished, jobs in total, simulated second)


class Simulation:
    """One policy on one trace. :meth:`run` returns a :class:`SimResult`."""

    def __init__(
        self,
        trace: Sequence[TraceJob],
        config: SimConfig,
        quotas: dict[str, TenantQuota],
        policy: str,
        plan_fn: PlanFn,
        *,
        progress: Progress | None = None,
    ) -> None:
        if config.gpus <= 0 or config.gpus_per_node <= 0:
            raise ValueError("gpus: must be positive")
        self.config = config
        self.policy = policy
        self.plan_fn = plan_fn
        self.quotas = quotas
        self.progress = progress
        self.jobs = [
            Job(
                i,
                t,
                shape_of(t.gpus, config.gpus_per_node),
                asked_duration(t.duration_s, config.overestimate),
            )
            for i, t in enumerate(trace)
        ]
        self.by_request: dict[int, Job] = {}
        self.finishes: list[tuple[int, int]] = []  # heap of (end second, job index)
        self.running: dict[int, Job] = {}  # request id -> job
        self.next_event: int | None = None
        self.ended = 0

    # -- time ------------------------------------------------------------------------
    def _boundary(self, t: int) -> int:
        c = self.config.cycle_s
        return -(-t // c) * c

    def _now(self, hub: Hub) -> int:
        return to_epoch(hub.clock.now()) - to_epoch(EPOCH)

    def _set(self, hub: Hub, t: int) -> None:
        hub.clock.set(EPOCH + timedelta(seconds=t))

    # -- the loop --------------------------------------------------------------------
    def run(self) -> SimResult:
        cfg = self.config
        longest = max((j.ask_s for j in self.jobs), default=1)
        settings = {
            "solver": "cpsat",
            "solver_time_limit_s": cfg.solver_time_limit_s,
            "solver_workers": cfg.solver_workers,
            "min_runtime_s": cfg.min_runtime_s,
            "max_duration_s": max(longest, 14 * 24 * 3600),
            "cycle_interval_s": float(cfg.cycle_s),
        }
        hub = build_hub(
            node_count=cfg.nodes,
            gpus_per_node=cfg.gpus_per_node,
            quota=self.quotas,
            settings=settings,
            eviction_grace_s=cfg.eviction_grace_s,
        )
        result = SimResult(self.policy, cfg, dict(self.quotas), self.jobs)
        result.settings = {
            k: getattr(hub.settings, k)
            for k in (
                "solver",
                "solver_time_limit_s",
                "solver_workers",
                "min_runtime_s",
                "horizon_s",
                "resolution_s",
            )
        }
        wall0 = time.perf_counter()
        try:
            self._loop(hub, result)
            result.promises = self._promises(hub)
        finally:
            hub.close()
        result.wall_s = time.perf_counter() - wall0
        return result

    def _loop(self, hub: Hub, result: SimResult) -> None:
        pending = list(self.jobs)  # sorted by submit time
        cursor = 0
        trigger: int | None = None
        total = len(self.jobs)
        idle_wakes = 0
        while self.ended < total:
            ts = pending[cursor].submit_s if cursor < len(pending) else None
            wake = [t for t in (trigger, self.next_event) if t is not None]
            if self.finishes:
                wake.append(self.finishes[0][0])
            t_cycle = self._boundary(min(wake)) if wake else None
            if ts is not None and (t_cycle is None or ts <= t_cycle):
                self._set(hub, max(ts, self._now(hub)))
                while cursor < len(pending) and pending[cursor].submit_s == ts:
                    self._submit(hub, pending[cursor])
                    cursor += 1
                trigger = ts if trigger is None else min(trigger, ts)
                continue
            if t_cycle is None:
                # Jobs wait with nothing due (should not happen); look again an hour later.
                idle_wakes += 1
                if idle_wakes > 24 * 365:
                    raise RuntimeError("the simulation makes no progress")
                t_cycle = self._boundary(self._now(hub) + 3600)
            t_cycle = max(t_cycle, self._now(hub))
            self._set(hub, t_cycle)
            self._cycle(hub, result, t_cycle)
            trigger = None
            if self.progress is not None:
                self.progress(self.ended, total, t_cycle)
        result.end_s = self._now(hub)

    # -- one boundary ----------------------------------------------------------------
    def _cycle(self, hub: Hub, result: SimResult, t: int) -> None:
        w0 = time.perf_counter()
        if self.finishes and self.finishes[0][0] <= t:
            hub.controller.reconcile_once()  # finished pods -> requests completed
            self._collect_finished(hub, t)
        cycle = run_cycle(hub.engine, hub.settings, hub.clock, plan_fn=self.plan_fn)
        hub.controller.reconcile_once()  # ungate opened, evict preempted/ended
        hub.cluster.kubelet.step()  # bind ungated pods, remove evicted ones
        if self._track(hub, t):
            # A pod on a node an evicted pod still held binds on the next step.
            hub.cluster.kubelet.step()
            self._track(hub, t)
        nxt = cycle.next_event
        self.next_event = None
        if nxt is not None:
            self.next_event = max(t + 1, math.ceil((nxt - EPOCH).total_seconds()))
        result.cycles.append(
            CycleStat(
                at=t,
                solve_s=cycle.timings.get("solve", 0.0),
                decide_s=cycle.timings.get("decide", 0.0),
                wall_s=time.perf_counter() - w0,
                waiting=cycle.requests,
                placed=cycle.placed,
                activated=cycle.applied.activated,
                preempted=cycle.applied.preempted,
                fallback=cycle.fallback,
            )
        )
        if cycle.fallback:
            log.warning("cycle at %d s: %s", t, cycle.fallback)

    def _submit(self, hub: Hub, job: Job) -> None:
        now = hub.clock.now()
        ask = submit_service.NewRequest(
            gpu_class=GPU_CLASS,
            gpus=job.gpus,
            duration=timedelta(seconds=job.ask_s),
            gpus_per_node=job.shape.gpus_per_node,
            name=job.trace.job_id[:100],
        )
        who = Principal(Role.TENANT, tenant=job.tenant)
        try:
            with session_scope(hub.engine) as s:
                row = submit_service.submit(s, who, now, hub.settings, ask).row
                rid = int(row.id or 0)
        except GpupoolError as exc:
            job.state = JobState.REJECTED
            job.note = str(exc)
            self.ended += 1
            return
        job.request_id = rid
        job.state = JobState.WAITING
        self.by_request[rid] = job
        self._create_pods(hub, job)

    def _create_pods(self, hub: Hub, job: Job) -> None:
        assert job.request_id is not None
        job.attempt += 1
        job.pod_names = hub.cluster.submit_pods(
            job.tenant,
            job.request_id,
            job.shape.pods,
            job.shape.gpus_per_node,
            run_seconds=job.run_s,
            prefix=f"job-{job.request_id}-a{job.attempt}",
        )

    def _delete_pods(self, hub: Hub, job: Job) -> None:
        # The job runner's clean-up (a Job's TTL after finishing): finished pods leave the
        # store, so each controller pass looks only at live work.
        for name in job.pod_names:
            hub.cluster.store.remove("pods", job.tenant, name)
        job.pod_names = []

    def _collect_finished(self, hub: Hub, t: int) -> None:
        while self.finishes and self.finishes[0][0] <= t:
            end, index = heapq.heappop(self.finishes)
            job = self.jobs[index]
            if job.state is not JobState.RUNNING or job.started_at is None:
                continue
            if job.started_at + job.run_s != end:
                continue  # a stale entry of a run that was preempted
            job.runs.append((job.started_at, end))
            job.finished_at = end
            job.state = JobState.DONE
            self.ended += 1
            assert job.request_id is not None
            self.running.pop(job.request_id, None)
            self._delete_pods(hub, job)

    def _track(self, hub: Hub, t: int) -> int:
        """Find jobs whose pods started and running jobs that lost their reservation."""
        with session_scope(hub.engine, write=False) as s:
            # Stored rows' ids: never None, whatever RequestRow.id's type says.
            active = cast(
                "set[int]",
                set(s.exec(select(RequestRow.id).where(RequestRow.state == "active")).all()),
            )
            lost = [rid for rid in self.running if rid not in active]
            states = (
                dict(
                    s.exec(
                        select(RequestRow.id, RequestRow.state).where(col(RequestRow.id).in_(lost))
                    ).all()
                )
                if lost
                else {}
            )
            waiting = [
                j.request_id for j in self.by_request.values() if j.state is JobState.WAITING
            ]
            refused = (
                cast(
                    "dict[int, str]",
                    dict(
                        s.exec(
                            select(RequestRow.id, RequestRow.state).where(
                                col(RequestRow.state).in_(
                                    ["rejected", "cancelled", "failed", "expired"]
                                ),
                                col(RequestRow.id).in_(waiting),
                            )
                        ).all()
                    ),
                )
                if waiting
                else {}
            )
        for rid in lost:
            job = self.running.pop(rid)
            assert job.started_at is not None
            job.runs.append((job.started_at, t))
            job.started_at = None
            state = states.get(rid, "")
            self._delete_pods(hub, job)
            if state in ("pending", "planned", "preempted"):
                job.preemptions += 1
                job.state = JobState.WAITING
                self._create_pods(hub, job)
            else:
                job.state = JobState.EXPIRED
                job.note = f"request {state}"
                self.ended += 1
        unstarted = 0
        for rid in active:
            found = self.by_request.get(rid)
            if found is None or found.state is not JobState.WAITING:
                continue
            start = self._pods_started(hub, found)
            if start is None:
                unstarted += 1
                continue
            found.state = JobState.RUNNING
            found.started_at = start
            self.running[rid] = found
            heapq.heappush(self.finishes, (start + found.run_s, found.index))
        for rid, state in refused.items():
            job = self.by_request[rid]
            job.state = JobState.REJECTED
            job.note = f"request {state}"
            self._delete_pods(hub, job)
            self.ended += 1
        return unstarted

    def _pods_started(self, hub: Hub, job: Job) -> int | None:
        starts = []
        for name in job.pod_names:
            pod = hub.cluster.store.get("pods", job.tenant, name)
            begun = (pod.get("status") or {}).get("startTime")
            if not begun:
                return None
            starts.append(to_epoch(parse_timestamp(begun)) - to_epoch(EPOCH))
        return max(starts) if starts else None

    def _promises(self, hub: Hub) -> dict[int, int]:
        """First promised start of each job that was promised a future start (it was
        ``planned`` before it started), in seconds since the trace start."""
        with session_scope(hub.engine, write=False) as s:
            planned = set(
                s.exec(
                    select(RequestEventRow.request_id).where(RequestEventRow.to_state == "planned")
                ).all()
            )
            rows = (
                s.exec(
                    select(RequestRow.id, RequestRow.first_planned_start).where(
                        col(RequestRow.id).in_(list(planned))
                    )
                ).all()
                if planned
                else []
            )
        out: dict[int, int] = {}
        for rid, first in rows:
            job = self.by_request.get(cast(int, rid))  # a stored row's id
            if job is not None and first is not None:
                out[job.index] = to_epoch(first) - to_epoch(EPOCH)
        return out


def simulate(
    trace: Sequence[TraceJob],
    config: SimConfig,
    quotas: dict[str, TenantQuota],
    policy: str = "gpupool",
    *,
    progress: Progress | None = None,
) -> SimResult:
    """Run ``policy`` on ``trace``; see :mod:`sim.policies` for the names."""
    from sim.policies import policy_fn

    return Simulation(trace, config, quotas, policy, policy_fn(policy), progress=progress).run()
