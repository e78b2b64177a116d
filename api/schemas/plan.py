"""The plan and the audit log, for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.requests import ReservationPublic
from scheduler.tables import AuditRow, CycleRunRow


class CyclePublic(BaseModel):
    started_at: datetime
    planner: str
    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    requests: int
    placed: int
    activated: int
    preempted: int
    stale: int
    violations: int
    fallback: str | None
    error: str | None
    snapshot_s: float
    solve_s: float
    apply_s: float

    @classmethod
    def of(cls, row: CycleRunRow) -> CyclePublic:
        return cls.model_validate(row, from_attributes=True)


class PlanPublic(BaseModel):
    start: datetime
    end: datetime
    reservations: list[ReservationPublic]
    last_cycle: CyclePublic | None


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def of(cls, row: AuditRow) -> AuditPublic:
        return cls.model_validate(row, from_attributes=True)


class SchedulerStatus(BaseModel):
    replica: str = Field(description="This server process.")
    is_leader: bool = Field(description="Whether this replica runs the cycles.")
    leader: str | None = Field(description="The replica holding the leader lease.")
    term: int | None = Field(description="Grows with every change of leader.")
    lease_expires_at: datetime | None
    cycles_run_here: int | None = Field(
        None, description="Cycles this process ran (null when they run in a child process)."
    )
    cycle_running_since: datetime | None = Field(
        None, description="When the cycle now running on this replica started, if one is."
    )
    last_cycle: CyclePublic | None
