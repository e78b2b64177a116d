"""Tenants, their API keys and quotas."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import ClassName, Strict, TenantName
from scheduler.budget import BudgetStatus
from scheduler.domain import BudgetPeriod
from scheduler.tables import ApiKeyRow, QuotaRow, TenantRow


class TenantCreate(Strict):
    name: TenantName
    display_name: str = Field("", max_length=200)
    weight: float = Field(1.0, gt=0, le=1000, description="Fair-share weight.")
    priority: int = Field(0, ge=-1000, le=1000, description="Default priority of its requests.")


class TenantUpdate(Strict):
    display_name: str | None = Field(None, max_length=200)
    weight: float | None = Field(None, gt=0, le=1000)
    priority: int | None = Field(None, ge=-1000, le=1000)
    active: bool | None = Field(
        None, description="false deactivates: keys stop working, waiting requests are cancelled."
    )


class TenantPublic(BaseModel):
    name: str
    display_name: str
    weight: float
    priority: int
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: TenantRow) -> TenantPublic:
        return cls.model_validate(row, from_attributes=True)


class ApiKeyCreate(Strict):
    name: str = Field("", max_length=100, description="A label to recognise the key by.")


class ApiKeyPublic(BaseModel):
    id: int
    tenant: str
    name: str
    prefix: str = Field(description="The visible part of the key, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKeyRow) -> ApiKeyPublic:
        return cls.model_validate(row, from_attributes=True)


class ApiKeyIssued(ApiKeyPublic):
    token: str = Field(description="The secret; shown once, store it now.")


class QuotaSet(Strict):
    guaranteed: int = Field(ge=0, le=1_000_000, description="GPUs always obtainable.")
    limit: int = Field(ge=0, le=1_000_000, description="Most GPUs at once (guaranteed + borrowed).")
    budget_gpu_hours: float | None = Field(
        None, ge=0, description="GPU-hours per budget period; null for no budget."
    )
    budget_period: BudgetPeriod = BudgetPeriod.MONTH


class BudgetPublic(BaseModel):
    period_start: datetime
    period_end: datetime
    budget_gpu_hours: float
    top_up_gpu_hours: float = Field(description="Added by operators this period.")
    used_gpu_hours: float = Field(description="GPU-hours held so far this period.")
    committed_gpu_hours: float = Field(
        description="Used, plus open reservations through their planned end."
    )
    left_gpu_hours: float = Field(description="What may still be planned this period.")

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetPublic:
        return cls(
            period_start=status.period_start,
            period_end=status.period_end,
            budget_gpu_hours=status.budget_gpu_h,
            top_up_gpu_hours=status.top_up_gpu_h,
            used_gpu_hours=round(status.used_gpu_h, 6),
            committed_gpu_hours=round(status.committed_gpu_h, 6),
            left_gpu_hours=round(status.left_gpu_h, 6),
        )


class QuotaPublic(BaseModel):
    tenant: str
    gpu_class: str
    guaranteed: int
    limit: int
    budget_gpu_hours: float | None
    budget_period: str
    updated_at: datetime
    budget: BudgetPublic | None = Field(None, description="This period's budget, if one is set.")

    @classmethod
    def of(cls, row: QuotaRow, status: BudgetStatus | None = None) -> QuotaPublic:
        out = cls.model_validate(row, from_attributes=True)
        out.budget = BudgetPublic.of(status) if status is not None else None
        return out


class TopUp(Strict):
    gpu_hours: float = Field(gt=0, le=10_000_000, description="GPU-hours to add this period.")
    note: str = Field("", max_length=500)


class QuotaPath(BaseModel):
    tenant: TenantName
    gpu_class: ClassName
