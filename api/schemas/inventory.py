"""GPU classes and nodes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import ClassName, NodeName, Strict
from scheduler.tables import GpuClassRow, NodeRow


class GpuClassCreate(Strict):
    name: ClassName
    description: str = Field("", max_length=500)
    memory_gib: int | None = Field(None, gt=0, le=4096)


class GpuClassUpdate(Strict):
    description: str | None = Field(None, max_length=500)
    memory_gib: int | None = Field(None, gt=0, le=4096)


class GpuClassPublic(BaseModel):
    name: str
    description: str
    memory_gib: int | None
    created_at: datetime
    nodes: int = 0
    gpus: int = 0
    guaranteed: int = Field(0, description="Sum of tenants' guaranteed quotas of this class.")
    oversubscribed: bool = Field(
        False, description="True when guaranteed quotas exceed the installed GPUs."
    )

    @classmethod
    def of(
        cls, row: GpuClassRow, *, nodes: int = 0, gpus: int = 0, guaranteed: int = 0
    ) -> GpuClassPublic:
        return cls(
            name=row.name,
            description=row.description,
            memory_gib=row.memory_gib,
            created_at=row.created_at,
            nodes=nodes,
            gpus=gpus,
            guaranteed=guaranteed,
            oversubscribed=guaranteed > gpus,
        )


class NodeCreate(Strict):
    name: NodeName
    gpu_class: ClassName
    gpus: int = Field(gt=0, le=1024)


class NodeUpdate(Strict):
    gpu_class: ClassName | None = None
    gpus: int | None = Field(None, gt=0, le=1024)


class NodePublic(BaseModel):
    name: str
    gpu_class: str
    gpus: int
    source: str = Field(description="static (operator inventory) or kubernetes (discovered)")
    drained: bool
    ready: bool
    schedulable: bool = Field(description="Takes new reservations: ready and not drained.")
    unschedulable_reason: str
    gpus_in_use: int = Field(0, description="GPUs held by open reservations now.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: NodeRow, *, in_use: int = 0) -> NodePublic:
        return cls(
            name=row.name,
            gpu_class=row.gpu_class,
            gpus=row.gpus,
            source=row.source,
            drained=row.drained,
            ready=row.ready,
            schedulable=row.ready and not row.drained,
            unschedulable_reason=("drained" if row.drained else row.unschedulable_reason),
            gpus_in_use=in_use,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
