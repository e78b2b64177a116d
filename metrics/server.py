"""The server's own Prometheus metrics (``gpupool_*``), served at ``/metrics``.

State that lives in the database (requests, quotas, reservations, budgets, the newest usage
samples, idle episodes) is read by :class:`StateCollector` at scrape time, so every replica
reports the same values. Events are counters and histograms of this process: cycle phases and
the solver, fed from each cycle's result on the leader; admissions and preemptions, read from
the request events each cycle adds; samples and idle flags, counted as pushes arrive. Units
are base units (seconds, GPUs, joules), counters end in ``_total``, and labels are bounded:
tenant, gpu_class, state, kind, phase, planner, status, action, attribution.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from scheduler import budget
from scheduler.clock import Clock
from scheduler.cycle import CycleResult
from scheduler.db import session_scope
from scheduler.domain import WAITING_VALUES, ReservationState
from scheduler.services.usage import IngestResult
from scheduler.settings import Settings
from scheduler.tables import (
    CycleRunRow,
    IdleEpisodeRow,
    NodeRow,
    QuotaRow,
    RequestEventRow,
    RequestRow,
    ReservationRow,
    TenantUsageRow,
    UsageDeviceRow,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.deps import AppContext
    from scheduler.runner import CycleRunner

log = logging.getLogger(__name__)

#: Cycle and phase durations: from a few milliseconds (greedy, small hub) to a long solve.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Waits from submit (or requeue) to start: seconds to a week.
WAIT_BUCKETS = (
    *(1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200),
    *(86400, 172800, 345600, 604800),
)
#: Phases of a cycle as :class:`~scheduler.cycle.CycleResult` times them.
PHASES = ("advance", "snapshot", "solve", "validate", "apply")
TC = ("tenant", "gpu_class")


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


Family = GaugeMetricFamily | CounterMetricFamily


def _families() -> dict[str, Family]:
    """Every family the collector yields, empty (describe() must not touch the database)."""
    families: list[Family] = [
        _gauge("gpupool_requests", "Requests by tenant, GPU class and state.", (*TC, "state")),
        _gauge("gpupool_capacity_gpus", "Installed GPUs by class.", ("gpu_class",)),
        _gauge(
            "gpupool_schedulable_gpus",
            "GPUs on ready, undrained nodes, by class.",
            ("gpu_class",),
        ),
        _gauge("gpupool_quota_guaranteed_gpus", "Guaranteed quota.", TC),
        _gauge("gpupool_quota_limit_gpus", "Quota limit (guaranteed plus borrowed).", TC),
        _gauge(
            "gpupool_allocated_gpus",
            "GPUs of open reservations, by kind (guaranteed or borrowed).",
            (*TC, "kind"),
        ),
        _gauge("gpupool_pending_workloads", "Requests waiting (pending or planned).", TC),
        _gauge("gpupool_pending_gpus", "GPUs asked for by waiting requests.", TC),
        _gauge(
            "gpupool_oldest_pending_wait_seconds",
            "How long the oldest waiting request has waited since submission.",
            TC,
        ),
        _gauge(
            "gpupool_used_gpus",
            "GPUs in use now by tenants' reservations: utilisation x GPUs, from recent samples.",
            TC,
        ),
        _gauge(
            "gpupool_unattributed_used_gpus",
            "GPUs in use now that no reservation could be charged with.",
            ("gpu_class",),
        ),
        _gauge(
            "gpupool_reporting_gpus",
            "GPUs whose node agent sent a recent sample (MIG instances as parts of a GPU).",
            ("gpu_class",),
        ),
        _gauge("gpupool_idle_reserved_gpus", "GPUs of open reservations flagged idle.", TC),
        _gauge("gpupool_budget_gpu_seconds", "GPU budget of the current period, with top-ups.", TC),
        _gauge("gpupool_budget_used_gpu_seconds", "GPU time charged so far in the period.", TC),
        _gauge(
            "gpupool_budget_remaining_gpu_seconds",
            "GPU time that may still be planned in the period (budget minus committed).",
            TC,
        ),
        _gauge(
            "gpupool_fair_share_decayed_usage_gpu_seconds",
            "Decayed GPU time per tenant (the fair-share input).",
            ("tenant",),
        ),
        _gauge(
            "gpupool_last_cycle_timestamp_seconds",
            "When the newest recorded scheduling cycle started (any replica).",
        ),
        _gauge("gpupool_leader", "1 when this replica runs the scheduling cycles."),
        CounterMetricFamily(
            "gpupool_cycle_failures", "Cycles of this replica that raised an error."
        ),
    ]
    return {f.name: f for f in families}


class StateCollector(Collector):
    """The hub's state, read from the database at scrape time."""

    def __init__(
        self, engine: Engine, clock: Clock, settings: Settings, owner: ServerMetrics
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._settings = settings
        self._owner = owner

    def describe(self) -> Iterator[Metric]:
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        f = _families()
        now = self._clock.now()
        with session_scope(self._engine, write=False) as s:
            self._requests(s, f, now)
            self._pool(s, f)
            self._usage(s, f, now)
            self._budgets(s, f, now)
            last = s.exec(select(func.max(CycleRunRow.started_at))).one()
            if last is not None:
                f["gpupool_last_cycle_timestamp_seconds"].add_metric([], last.timestamp())
        runner = self._owner.runner
        if runner is not None:
            f["gpupool_leader"].add_metric([], 1.0 if runner.is_leader else 0.0)
            f["gpupool_cycle_failures"].add_metric([], runner.failures)
        yield from f.values()

    @staticmethod
    def _requests(s: Session, f: dict[str, Family], now: datetime) -> None:
        pending: dict[tuple[str, str], int] = defaultdict(int)
        for tenant, cls, state, n in s.exec(
            select(
                RequestRow.tenant, RequestRow.gpu_class, RequestRow.state, func.count()
            ).group_by(RequestRow.tenant, RequestRow.gpu_class, RequestRow.state)
        ).all():
            f["gpupool_requests"].add_metric([tenant, cls, state], n)
            if state in WAITING_VALUES:
                pending[(tenant, cls)] += n
        for key, n in sorted(pending.items()):
            f["gpupool_pending_workloads"].add_metric(list(key), n)
        for tenant, cls, gpus, oldest in s.exec(
            select(
                RequestRow.tenant,
                RequestRow.gpu_class,
                func.sum(RequestRow.gpus),
                func.min(RequestRow.submitted_at),
            )
            .where(col(RequestRow.state).in_(WAITING_VALUES))
            .group_by(RequestRow.tenant, RequestRow.gpu_class)
        ).all():
            f["gpupool_pending_gpus"].add_metric([tenant, cls], gpus or 0)
            if oldest is not None:
                wait = max(0.0, (now - _aware(oldest)).total_seconds())
                f["gpupool_oldest_pending_wait_seconds"].add_metric([tenant, cls], wait)

    @staticmethod
    def _pool(s: Session, f: dict[str, Family]) -> None:
        capacity: dict[str, int] = defaultdict(int)
        schedulable: dict[str, int] = defaultdict(int)
        for n in s.exec(select(NodeRow)).all():
            capacity[n.gpu_class] += n.gpus
            schedulable[n.gpu_class] += n.gpus if n.ready and not n.drained else 0
        for cls in sorted(capacity):
            f["gpupool_capacity_gpus"].add_metric([cls], capacity[cls])
            f["gpupool_schedulable_gpus"].add_metric([cls], schedulable[cls])
        for q in s.exec(select(QuotaRow)).all():
            f["gpupool_quota_guaranteed_gpus"].add_metric([q.tenant, q.gpu_class], q.guaranteed)
            f["gpupool_quota_limit_gpus"].add_metric([q.tenant, q.gpu_class], q.limit)
        for tenant, cls, kind, gpus in s.exec(
            select(
                ReservationRow.tenant,
                ReservationRow.gpu_class,
                ReservationRow.kind,
                func.sum(ReservationRow.gpus),
            )
            .where(ReservationRow.state == ReservationState.ACTIVE.value)
            .group_by(ReservationRow.tenant, ReservationRow.gpu_class, ReservationRow.kind)
        ).all():
            f["gpupool_allocated_gpus"].add_metric([tenant, cls, kind], gpus or 0)
        for u in s.exec(select(TenantUsageRow)).all():
            f["gpupool_fair_share_decayed_usage_gpu_seconds"].add_metric(
                [u.tenant], u.decayed_gpu_s
            )

    def _usage(self, s: Session, f: dict[str, Family], now: datetime) -> None:
        since = now - timedelta(seconds=self._settings.usage_stale_s)
        used: dict[tuple[str, str], float] = defaultdict(float)
        stray: dict[str, float] = defaultdict(float)
        reporting: dict[str, float] = defaultdict(float)
        for d in s.exec(select(UsageDeviceRow).where(col(UsageDeviceRow.last_ts) > since)):
            reporting[d.gpu_class] += d.share
            busy = d.share * (d.util_pct or 0.0) / 100.0
            if d.reservation_id:
                used[(d.tenant, d.gpu_class)] += busy
            else:
                stray[d.gpu_class] += busy
        for key, value in sorted(used.items()):
            f["gpupool_used_gpus"].add_metric(list(key), value)
        for cls, value in sorted(stray.items()):
            f["gpupool_unattributed_used_gpus"].add_metric([cls], value)
        for cls, value in sorted(reporting.items()):
            f["gpupool_reporting_gpus"].add_metric([cls], value)
        for tenant, cls, gpus in s.exec(
            select(IdleEpisodeRow.tenant, IdleEpisodeRow.gpu_class, func.sum(IdleEpisodeRow.gpus))
            .join(ReservationRow, col(ReservationRow.id) == col(IdleEpisodeRow.reservation_id))
            .where(
                col(IdleEpisodeRow.ended_at).is_(None),
                ReservationRow.state == ReservationState.ACTIVE.value,
            )
            .group_by(IdleEpisodeRow.tenant, IdleEpisodeRow.gpu_class)
        ).all():
            f["gpupool_idle_reserved_gpus"].add_metric([tenant, cls], gpus or 0)

    @staticmethod
    def _budgets(s: Session, f: dict[str, Family], now: datetime) -> None:
        for (tenant, cls), st in sorted(budget.statuses(s, now).items()):
            total = (st.budget_gpu_h + st.top_up_gpu_h) * 3600
            f["gpupool_budget_gpu_seconds"].add_metric([tenant, cls], total)
            f["gpupool_budget_used_gpu_seconds"].add_metric([tenant, cls], st.used_gpu_h * 3600)
            f["gpupool_budget_remaining_gpu_seconds"].add_metric(
                [tenant, cls], st.left_gpu_h * 3600
            )


class RunnerCollector(Collector):
    """Whether this process leads, and its failed cycles (the scheduler process's share of
    what StateCollector reports in a single-process server)."""

    def __init__(self, owner: ServerMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        f = _families()
        runner = self._owner.runner
        if runner is not None:
            f["gpupool_leader"].add_metric([], 1.0 if runner.is_leader else 0.0)
            f["gpupool_cycle_failures"].add_metric([], runner.failures)
        yield f["gpupool_leader"]
        yield f["gpupool_cycle_failures"]


def _aware(t: datetime) -> datetime:
    """Treat a naive aggregate value as UTC (as every stored time is)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class ServerMetrics:
    """All of the server's metrics on one private registry."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        state: bool = True,
    ) -> None:
        """``state=False`` leaves out the hub's state read from the database: the scheduler
        process serves only what it alone knows (its cycles), the API process the rest."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.runner: CycleRunner | None = None
        self._engine = engine
        self._since = clock.now()
        self._event_cursor: int | None = None
        r = self.registry
        if state:
            self.registry.register(StateCollector(engine, clock, settings, self))
        else:
            self.registry.register(RunnerCollector(self))
        self.cycles = Counter(
            "gpupool_cycles", "Scheduling cycles run, by planner and plan status.",
            ["planner", "status"], registry=r,
        )  # fmt: skip
        self.cycle_duration = Histogram(
            "gpupool_cycle_duration_seconds", "Wall time of a whole scheduling cycle.",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.phase_duration = Histogram(
            "gpupool_cycle_phase_duration_seconds",
            "Wall time of each phase of a cycle: advance, snapshot, solve, validate, apply.",
            ["phase"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.solver_duration = Histogram(
            "gpupool_solver_duration_seconds", "Time the planner spent on one plan.",
            ["planner"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.solver_gap = Gauge(
            "gpupool_solver_gap",
            "Optimality gap the planner reported for the last plan (NaN when it proves none).",
            registry=r,
        )
        self.refused = Counter(
            "gpupool_plan_validation_failures",
            "Plans the validator refused (the cycle fell back to greedy or applied nothing).",
            registry=r,
        )
        self.stale = Counter(
            "gpupool_cycle_stale_requests",
            "Requests a cycle left to the next one because they changed meanwhile.",
            registry=r,
        )
        self.admitted = Counter(
            "gpupool_admitted_workloads", "Requests whose reservation opened.",
            list(TC), registry=r,
        )  # fmt: skip
        self.wait = Histogram(
            "gpupool_admission_wait_time_seconds",
            "Time from submission (or requeue) to the reservation opening.",
            list(TC), buckets=WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.preempted = Counter(
            "gpupool_preempted_workloads", "Borrowed reservations reclaimed by the plan.",
            list(TC), registry=r,
        )  # fmt: skip
        self.samples = Counter(
            "gpupool_usage_samples",
            "Usage samples stored, by how they were attributed: request, node or none.",
            ["attribution"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "gpupool_usage_duplicate_samples", "Samples received again and ignored.", registry=r
        )
        self.mismatches = Counter(
            "gpupool_usage_request_mismatches",
            "Samples whose pod named a request not holding GPUs on that node then.",
            registry=r,
        )
        self.idle = Counter(
            "gpupool_idle_reservations",
            "Reservations flagged idle, by the action taken: none, end or reclaimable.",
            [*TC, "action"], registry=r,
        )  # fmt: skip

    def observe_cycle(self, result: CycleResult) -> None:
        """The runner's ``on_result``: never raises, so a metrics fault cannot fail a cycle."""
        try:
            self._observe_cycle(result)
        except Exception:
            log.warning("could not record the cycle's metrics", exc_info=True)

    def _observe_cycle(self, result: CycleResult) -> None:
        t = result.timings
        self.cycles.labels(result.planner or "none", result.status or "none").inc()
        total = sum(t.get(k, 0.0) for k in ("advance", "snapshot", "decide", "apply"))
        self.cycle_duration.observe(total)
        for phase in PHASES:
            if phase in t:
                self.phase_duration.labels(phase).observe(t[phase])
        if result.planner and result.planner != "none":
            self.solver_duration.labels(result.planner).observe(t.get("solve", 0.0))
        self.solver_gap.set(float("nan") if result.gap is None else result.gap)
        if result.violations:
            self.refused.inc()
        self.stale.inc(result.applied.stale)
        self._tail_events()

    def _tail_events(self) -> None:
        """Count the admissions (with their waits) and preemptions the cycle recorded."""
        with session_scope(self._engine, write=False) as s:
            stmt = (
                select(RequestEventRow, RequestRow.tenant, RequestRow.gpu_class)
                .join(RequestRow, col(RequestRow.id) == col(RequestEventRow.request_id))
                .where(
                    RequestEventRow.kind == "state",
                    col(RequestEventRow.to_state).in_(["active", "preempted"]),
                )
                .order_by(col(RequestEventRow.id))
                .limit(10_000)
            )
            if self._event_cursor is None:
                stmt = stmt.where(col(RequestEventRow.at) >= self._since)
            else:
                stmt = stmt.where(col(RequestEventRow.id) > self._event_cursor)
            events = s.exec(stmt).all()
            if not events:
                return
            self._event_cursor = max(e.id or 0 for e, _, _ in events)
            started = [e for e, _, _ in events if e.to_state == "active"]
            queued = self._queue_entries(s, sorted({e.request_id for e in started}))
            for event, tenant, cls in events:
                if event.to_state == "preempted":
                    self.preempted.labels(tenant, cls).inc()
                    continue
                self.admitted.labels(tenant, cls).inc()
                entered = [
                    at for eid, at in queued.get(event.request_id, []) if eid < (event.id or 0)
                ]
                if entered:
                    self.wait.labels(tenant, cls).observe(
                        max(0.0, (event.at - entered[-1]).total_seconds())
                    )

    @staticmethod
    def _queue_entries(s: Session, request_ids: list[int]) -> dict[int, list[tuple[int, datetime]]]:
        """When each request entered the queue: submitted, or requeued after a preemption."""
        out: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
        for start in range(0, len(request_ids), 500):
            for e in s.exec(
                select(RequestEventRow)
                .where(
                    col(RequestEventRow.request_id).in_(request_ids[start : start + 500]),
                    RequestEventRow.to_state == "pending",
                )
                .order_by(col(RequestEventRow.id))
            ):
                out[e.request_id].append((e.id or 0, e.at))
        return out

    def observe_ingest(self, result: IngestResult) -> None:
        self.samples.labels("request").inc(result.by_request)
        self.samples.labels("node").inc(result.by_node)
        self.samples.labels("none").inc(result.unattributed)
        self.duplicates.inc(result.duplicates)
        self.mismatches.inc(result.mismatches)
        for flag in result.flagged:
            self.idle.labels(flag.tenant, flag.gpu_class, flag.action).inc()


def observe_ingest(ctx: AppContext, result: IngestResult) -> None:
    """Count a push in the app's metrics (a no-op for an app without them)."""
    metrics = ctx.extras.get("metrics")
    if isinstance(metrics, ServerMetrics):
        metrics.observe_ingest(result)


def mount_metrics(
    app: FastAPI, ctx: AppContext, metrics: ServerMetrics | None = None
) -> CollectorRegistry:
    """Serve ``metrics`` (by default, new ones for ``ctx``) at ``/metrics``."""
    if metrics is None:
        metrics = ServerMetrics(ctx.engine, ctx.clock, ctx.settings)
        metrics.runner = ctx.runner
    app.mount("/metrics", make_asgi_app(registry=metrics.registry))
    ctx.extras["metrics"] = metrics
    ctx.extras["registry"] = metrics.registry
    return metrics.registry
