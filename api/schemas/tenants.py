"""Tenants, their API keys and quotas."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import ClassName, Strict, TenantName
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


class QuotaPublic(BaseModel):
    tenant: str
    gpu_class: str
    guaranteed: int
    limit: int
    budget_gpu_hours: float | None
    budget_period: str
    updated_at: datetime

    @classmethod
    def of(cls, row: QuotaRow) -> QuotaPublic:
        return cls.model_validate(row, from_attributes=True)


class QuotaPath(BaseModel):
    tenant: TenantName
    gpu_class: ClassName
