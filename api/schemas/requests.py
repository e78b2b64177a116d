"""Requests and their reservations."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, Field

from api.schemas.common import ClassName, Strict, TenantName
from scheduler.services.requests import NewRequest, ReservationView
from scheduler.tables import RequestEventRow, RequestRow


class RequestCreate(Strict):
    gpu_class: ClassName
    gpus: int = Field(gt=0, le=100_000, description="GPUs in all.")
    duration: timedelta = Field(
        description="Upper bound of the run, like a wall-time limit: seconds or ISO 8601 "
        "(`PT12H`).",
        examples=[43200, "PT12H"],
    )
    gpus_per_node: int | None = Field(
        None,
        gt=0,
        le=1024,
        description="Gang shape: GPUs on each node. Default: one node if it fits, else whole "
        "nodes of the largest size.",
    )
    not_before: AwareDatetime | None = Field(None, description="Earliest start (with zone).")
    deadline: AwareDatetime | None = Field(None, description="Must end by then (with zone).")
    priority: int | None = Field(
        None, ge=-1000, le=1000, description="Default: the tenant's priority."
    )
    preemptible: bool = Field(
        True,
        description="May borrow idle GPUs beyond the guaranteed quota (reclaimable). A "
        "non-preemptible request runs only inside guaranteed quota.",
    )
    requeue_on_preemption: bool = Field(
        True, description="Go back to pending when preempted (else end as preempted)."
    )
    name: str = Field("", max_length=200, description="A label of your own.")
    tenant: TenantName | None = Field(
        None, description="Only for the operator submitting on a tenant's behalf."
    )

    def to_domain(self) -> NewRequest:
        return NewRequest(
            gpu_class=self.gpu_class,
            gpus=self.gpus,
            duration=self.duration,
            gpus_per_node=self.gpus_per_node,
            not_before=self.not_before,
            deadline=self.deadline,
            priority=self.priority,
            preemptible=self.preemptible,
            requeue_on_preemption=self.requeue_on_preemption,
            name=self.name,
        )


class NodeShare(BaseModel):
    node: str
    gpus: int


class ReservationPublic(BaseModel):
    id: int
    request_id: int
    tenant: str
    gpu_class: str
    gpus: int
    start: datetime
    end: datetime
    kind: str = Field(description="guaranteed (inside quota) or borrowed (reclaimable)")
    state: str = Field(description="planned, active or ended")
    allocation: list[NodeShare]
    end_reason: str | None
    ended_at: datetime | None

    @classmethod
    def of(cls, view: ReservationView) -> ReservationPublic:
        r = view.row
        return cls(
            id=r.id or 0,
            request_id=r.request_id,
            tenant=r.tenant,
            gpu_class=r.gpu_class,
            gpus=r.gpus,
            start=r.start,
            end=r.end,
            kind=r.kind,
            state=r.state,
            allocation=[NodeShare(node=n, gpus=g) for n, g in view.allocation.items()],
            end_reason=r.end_reason,
            ended_at=r.ended_at,
        )


class Reason(BaseModel):
    code: str = Field(description="Machine-readable, e.g. capacity_busy_until.")
    message: str = Field(description="The same in a sentence.")


class RequestPublic(BaseModel):
    id: int
    tenant: str
    name: str
    gpu_class: str
    gpus: int
    gpus_per_node: int
    duration_s: int
    not_before: datetime | None
    deadline: datetime | None
    priority: int
    preemptible: bool
    requeue_on_preemption: bool
    state: str
    reason: Reason | None
    planned_start: datetime | None = Field(description="ETA: when the reservation opens.")
    planned_end: datetime | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime
    reservation: ReservationPublic | None

    @classmethod
    def of(cls, row: RequestRow, reservation: ReservationView | None) -> RequestPublic:
        return cls(
            id=row.id or 0,
            tenant=row.tenant,
            name=row.name,
            gpu_class=row.gpu_class,
            gpus=row.gpus,
            gpus_per_node=row.gpus_per_node,
            duration_s=row.duration_s,
            not_before=row.not_before,
            deadline=row.deadline,
            priority=row.priority,
            preemptible=row.preemptible,
            requeue_on_preemption=row.requeue_on_preemption,
            state=row.state,
            reason=(
                Reason(code=row.reason_code, message=row.reason_message or "")
                if row.reason_code
                else None
            ),
            planned_start=row.planned_start,
            planned_end=row.planned_end,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            updated_at=row.updated_at,
            reservation=ReservationPublic.of(reservation) if reservation else None,
        )


class CompleteBody(Strict):
    detail: str = Field("", max_length=500, description="What finished, for the record.")


class EventPublic(BaseModel):
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    message: str
    data: dict[str, object]

    @classmethod
    def of(cls, row: RequestEventRow) -> EventPublic:
        return cls.model_validate(row, from_attributes=True)
