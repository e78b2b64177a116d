"""Requests and their reservations."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, Field

from api.schemas.common import ClassName, Strict, TenantName
from scheduler.services.explain import Explanation, QueuePosition
from scheduler.services.requests import ReservationView
from scheduler.services.submit import NewRequest
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
    preempt_at: datetime | None = Field(
        None, description="A reclaim scheduled for this borrowed reservation, if any."
    )
    preempt_for: str | None = Field(None, description="The tenant whose guarantee reclaims it.")

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
            preempt_at=r.preempt_at,
            preempt_for=r.preempt_for,
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
    queue_position: QueuePositionPublic | None = Field(
        None, description="For a waiting request (single-request reads only)."
    )

    @classmethod
    def of(
        cls,
        row: RequestRow,
        reservation: ReservationView | None,
        queue: QueuePosition | None = None,
    ) -> RequestPublic:
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
            queue_position=QueuePositionPublic(
                tenant=queue.tenant,
                gpu_class=queue.gpu_class,
                waiting_in_class=queue.waiting_in_class,
            )
            if queue
            else None,
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


class ExtendBody(Strict):
    duration: timedelta = Field(
        description="How much longer the window stays open: seconds or ISO 8601 (`PT2H`).",
        examples=[3600, "PT2H"],
    )


class QueuePositionPublic(BaseModel):
    tenant: int = Field(description="1 = next among the tenant's own waiting requests.")
    gpu_class: int = Field(description="1 = next among all waiting requests of the class.")
    waiting_in_class: int


class HolderPublic(BaseModel):
    tenant: str
    gpus: int
    until: datetime
    request_ids: list[int] = Field(
        description="Only the caller's own requests (all of them for the operator)."
    )


class BindingPublic(BaseModel):
    kind: str = Field(description="capacity, quota_limit, budget, not_before, nodes_unavailable")
    detail: str
    nodes: list[str]
    until: datetime | None
    holders: list[HolderPublic]


class ExplainPublic(BaseModel):
    request_id: int
    state: str
    reason: Reason | None
    planned_start: datetime | None
    earliest_allowed: datetime = Field(description="now, or not_before if later")
    bindings: list[BindingPublic] = Field(description="What keeps it from starting earlier.")
    queue_position: QueuePositionPublic | None

    @classmethod
    def of(cls, e: Explanation) -> ExplainPublic:
        return cls(
            request_id=e.request_id,
            state=e.state,
            reason=Reason(code=e.reason_code, message=e.reason_message or "")
            if e.reason_code
            else None,
            planned_start=e.planned_start,
            earliest_allowed=e.earliest_allowed,
            bindings=[
                BindingPublic(
                    kind=b.kind,
                    detail=b.detail,
                    nodes=b.nodes,
                    until=b.until,
                    holders=[
                        HolderPublic(
                            tenant=h.tenant, gpus=h.gpus, until=h.until, request_ids=h.request_ids
                        )
                        for h in b.holders
                    ],
                )
                for b in e.bindings
            ],
            queue_position=QueuePositionPublic(
                tenant=e.queue.tenant,
                gpu_class=e.queue.gpu_class,
                waiting_in_class=e.queue.waiting_in_class,
            )
            if e.queue
            else None,
        )
