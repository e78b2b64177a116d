"""Database tables (SQLModel ``table=True``). Only services and the cycle touch these; the API
and the solver see their own schemas and dataclasses.

Rows that operators or the cycle change concurrently carry a ``version`` column used for
optimistic concurrency: SQLAlchemy adds ``AND version = :v`` to every UPDATE of such a row and
raises ``StaleDataError`` when another writer got there first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Column, Index, Integer, UniqueConstraint
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from scheduler.db import UTCDateTime


def _utc(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ...,
        sa_type=UTCDateTime,
        nullable=nullable,
        index=index,
    )


def _version_column() -> Column[int]:
    return Column("version", Integer, nullable=False, default=1, server_default="1")


@declared_attr.directive
def _versioned(cls: Any) -> dict[str, Any]:
    return {"version_id_col": cls.__table__.c.version}


_VERSIONED: Any = _versioned


class GpuClassRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "gpu_class"

    name: str = Field(primary_key=True, max_length=63)
    description: str = Field(default="", max_length=500)
    memory_gib: int | None = None
    created_at: datetime = _utc()


class NodeRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "node"

    name: str = Field(primary_key=True, max_length=253)
    gpu_class: str = Field(foreign_key="gpu_class.name", index=True, max_length=63)
    gpus: int
    source: str = Field(default="static", max_length=20)
    drained: bool = False
    ready: bool = True
    unschedulable_reason: str = Field(default="", max_length=200)
    created_at: datetime = _utc()
    updated_at: datetime = _utc()
    version: int = Field(default=1, sa_column=_version_column())
    __mapper_args__ = _VERSIONED


class TenantRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "tenant"

    name: str = Field(primary_key=True, max_length=63)
    display_name: str = Field(default="", max_length=200)
    weight: float = 1.0
    priority: int = 0
    active: bool = True
    created_at: datetime = _utc()
    updated_at: datetime = _utc()
    version: int = Field(default=1, sa_column=_version_column())
    __mapper_args__ = _VERSIONED


class ApiKeyRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.name", index=True, max_length=63)
    name: str = Field(default="", max_length=100)
    prefix: str = Field(unique=True, max_length=16)
    secret_hash: str = Field(max_length=64)
    created_at: datetime = _utc()
    revoked_at: datetime | None = _utc(nullable=True)
    last_used_at: datetime | None = _utc(nullable=True)


class QuotaRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "quota"

    tenant: str = Field(foreign_key="tenant.name", primary_key=True, max_length=63)
    gpu_class: str = Field(foreign_key="gpu_class.name", primary_key=True, max_length=63)
    guaranteed: int = 0
    limit: int = 0
    budget_gpu_hours: float | None = None
    budget_period: str = Field(default="month", max_length=10)
    created_at: datetime = _utc()
    updated_at: datetime = _utc()
    version: int = Field(default=1, sa_column=_version_column())
    __mapper_args__ = _VERSIONED


class RequestRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "request"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_request_idempotency"),
        Index("ix_request_state_class", "state", "gpu_class"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.name", index=True, max_length=63)
    name: str = Field(default="", max_length=200)
    gpu_class: str = Field(max_length=63)
    gpus: int
    gpus_per_node: int
    duration_s: int
    not_before: datetime | None = _utc(nullable=True)
    deadline: datetime | None = _utc(nullable=True)
    priority: int = 0
    preemptible: bool = True
    requeue_on_preemption: bool = True
    # The state changes in scheduler.lifecycle.transition() only, which also records the event.
    state: str = Field(max_length=20)
    reason_code: str | None = Field(default=None, max_length=40)
    reason_message: str | None = Field(default=None, max_length=500)
    planned_start: datetime | None = _utc(nullable=True)
    planned_end: datetime | None = _utc(nullable=True)
    first_planned_start: datetime | None = _utc(nullable=True)
    # The start promised on guaranteed quota: later plans keep it or start earlier (see
    # solver/promises.py); kept while an earlier borrowed start is planned, cleared if forced.
    promised_start: datetime | None = _utc(nullable=True)
    submitted_at: datetime = _utc()
    updated_at: datetime = _utc()
    started_at: datetime | None = _utc(nullable=True)
    ended_at: datetime | None = _utc(nullable=True)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    version: int = Field(default=1, sa_column=_version_column())
    __mapper_args__ = _VERSIONED


class ReservationRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "reservation"
    __table_args__ = (Index("ix_reservation_state_start", "state", "start"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    tenant: str = Field(foreign_key="tenant.name", index=True, max_length=63)
    gpu_class: str = Field(max_length=63)
    gpus: int
    start: datetime = _utc()
    end: datetime = _utc()
    kind: str = Field(max_length=20)
    # planned -> active -> ended; a planned one the next plan drops is deleted.
    state: str = Field(max_length=20)
    end_reason: str | None = Field(default=None, max_length=40)
    ended_at: datetime | None = _utc(nullable=True)
    # A reclaim the plan has scheduled for this open, borrowed reservation: its GPUs are
    # promised to ``preempt_for``'s guaranteed quota from ``preempt_at`` on.
    preempt_at: datetime | None = _utc(nullable=True)
    preempt_for: str | None = Field(default=None, max_length=63)
    created_at: datetime = _utc()
    updated_at: datetime = _utc()
    version: int = Field(default=1, sa_column=_version_column())
    __mapper_args__ = _VERSIONED


class ReservationNodeRow(SQLModel, table=True):
    """GPUs of one reservation on one node. No foreign key to ``node``: history outlives nodes."""

    __tablename__: ClassVar[str] = "reservation_node"

    reservation_id: int = Field(foreign_key="reservation.id", primary_key=True, ondelete="CASCADE")
    node: str = Field(primary_key=True, max_length=253, index=True)
    gpus: int


class RequestEventRow(SQLModel, table=True):
    """What happened to a request: state changes, ETA changes, reasons, preemptions."""

    __tablename__: ClassVar[str] = "request_event"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="request.id", index=True)
    at: datetime = _utc()
    kind: str = Field(max_length=30)
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str | None = Field(default=None, max_length=20)
    message: str = Field(default="", max_length=500)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class AuditRow(SQLModel, table=True):
    """Every operator change: who, what, the object before and after."""

    __tablename__: ClassVar[str] = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _utc(index=True)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=50, index=True)
    object_type: str = Field(max_length=30)
    object_id: str = Field(max_length=253)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class CycleRunRow(SQLModel, table=True):
    """One scheduling cycle: what the planner produced and how long each phase took."""

    __tablename__: ClassVar[str] = "cycle_run"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = _utc(index=True)
    planner: str = Field(default="", max_length=20)
    status: str = Field(default="", max_length=30)
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    requests: int = 0
    placed: int = 0
    activated: int = 0
    preempted: int = 0
    rejected: int = 0
    stale: int = 0
    violations: int = 0
    fallback: str | None = Field(default=None, max_length=500)
    error: str | None = Field(default=None, max_length=1000)
    advance_s: float = 0.0
    snapshot_s: float = 0.0
    solve_s: float = 0.0
    validate_s: float = 0.0
    apply_s: float = 0.0


class TenantUsageRow(SQLModel, table=True):
    """Decayed GPU-seconds per tenant (the fair-share input), brought up to date each cycle.

    ``decayed_gpu_s`` is the usage as of ``as_of``: every GPU-second held at time t counts
    ``2 ** (-(as_of - t) / half_life)``, as Slurm's fair-share decay does.
    """

    __tablename__: ClassVar[str] = "tenant_usage"

    tenant: str = Field(foreign_key="tenant.name", primary_key=True, max_length=63)
    decayed_gpu_s: float = 0.0
    total_gpu_s: float = 0.0
    as_of: datetime = _utc()


class BudgetTopUpRow(SQLModel, table=True):
    """GPU-hours an operator added to one budget period of a tenant's quota."""

    __tablename__: ClassVar[str] = "budget_top_up"

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.name", index=True, max_length=63)
    gpu_class: str = Field(max_length=63)
    period_start: datetime = _utc()
    gpu_hours: float
    at: datetime = _utc()
    actor: str = Field(max_length=100)
    note: str = Field(default="", max_length=500)


class LeaderLeaseRow(SQLModel, table=True):
    """Which replica runs cycles. A replica holds the lease while it renews it before
    ``expires_at``; ``term`` grows with every change of holder and fences stale leaders."""

    __tablename__: ClassVar[str] = "leader_lease"

    name: str = Field(primary_key=True, max_length=40)
    holder: str = Field(default="", max_length=200)
    term: int = 0
    acquired_at: datetime | None = _utc(nullable=True)
    renewed_at: datetime | None = _utc(nullable=True)
    expires_at: datetime | None = _utc(nullable=True)
    replan_requested_at: datetime | None = _utc(nullable=True)
    # Set by the leader while a cycle runs, so any replica can tell (GET /v1/scheduler).
    cycle_running_since: datetime | None = _utc(nullable=True)


class UsageBucketRow(SQLModel, table=True):
    """Measured GPU time per hour, node and reservation: the accounting store.

    Samples are folded in as they arrive instead of kept one row each (1,000 GPUs every 10 s
    would be 8.6 M rows a day). ``reservation_id`` 0 (with ``tenant`` "") holds what no
    reservation could be charged with. All figures are GPU-seconds except ``energy_j``.
    """

    __tablename__: ClassVar[str] = "usage_bucket"
    __table_args__ = (Index("ix_usage_bucket_tenant_start", "tenant", "bucket_start"),)

    bucket_start: datetime = Field(sa_type=UTCDateTime, primary_key=True)
    node: str = Field(primary_key=True, max_length=253)
    reservation_id: int = Field(primary_key=True)
    tenant: str = Field(default="", max_length=63)
    gpu_class: str = Field(default="", max_length=63)
    samples: int = 0
    measured_gpu_s: float = 0.0
    used_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0
    energy_j: float = 0.0


class UsageDeviceRow(SQLModel, table=True):
    """The newest sample of each GPU or MIG instance a node agent reports.

    ``last_ts`` is the delivery cursor: a sample at or before it is a duplicate (agents
    resend a batch whose answer was lost), and the gap since it caps the next sample's
    weight. ``mig_key`` is the MIG GPU instance id, or -1 for a whole GPU.
    """

    __tablename__: ClassVar[str] = "usage_device"

    node: str = Field(primary_key=True, max_length=253)
    gpu_uuid: str = Field(primary_key=True, max_length=100)
    mig_key: int = Field(primary_key=True)
    gpu_index: int | None = None
    model: str = Field(default="", max_length=200)
    fb_total_mib: int | None = None
    interval_s: float
    last_ts: datetime = _utc()
    util_pct: float | None = None
    share: float = 1.0
    reservation_id: int = 0
    tenant: str = Field(default="", max_length=63)
    gpu_class: str = Field(default="", max_length=63)
    updated_at: datetime = _utc()


class IdleTrackerRow(SQLModel, table=True):
    """How a reservation's GPUs on one node have looked in the node's recent sampling passes.

    ``seen_since``: start of the current unbroken run of passes; ``last_busy``: the newest
    pass in which the reservation used a GPU there at or above the idle threshold.
    """

    __tablename__: ClassVar[str] = "idle_tracker"

    reservation_id: int = Field(primary_key=True)
    node: str = Field(primary_key=True, max_length=253)
    seen_since: datetime = _utc()
    last_seen: datetime = _utc()
    last_busy: datetime | None = _utc(nullable=True)


class IdleEpisodeRow(SQLModel, table=True):
    """A reservation flagged idle: since when, what was done, and when it ended."""

    __tablename__: ClassVar[str] = "idle_episode"

    id: int | None = Field(default=None, primary_key=True)
    reservation_id: int = Field(index=True)
    request_id: int
    tenant: str = Field(max_length=63)
    gpu_class: str = Field(max_length=63)
    gpus: int
    idle_since: datetime = _utc()
    flagged_at: datetime = _utc()
    action: str = Field(max_length=20)
    ended_at: datetime | None = _utc(nullable=True)
    end_reason: str | None = Field(default=None, max_length=40)
