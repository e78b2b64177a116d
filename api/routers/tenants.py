"""Tenants, their API keys and quotas (operator)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from sqlmodel import Session

from api.deps import Ctx, Operator, User
from api.retry import RetryRoute
from api.routers.params import Cursor, Limit
from api.schemas.common import PROBLEM_RESPONSES, ClassName, Id, Page, TenantName
from api.schemas.tenants import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyPublic,
    QuotaPublic,
    QuotaSet,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
    TopUp,
)
from scheduler import budget
from scheduler.services import api_keys, quotas, tenants
from scheduler.tables import QuotaRow

router = APIRouter(
    prefix="/v1", tags=["tenants"], responses=PROBLEM_RESPONSES, route_class=RetryRoute
)


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantPublic)
def create_tenant(body: TenantCreate, ctx: Ctx, who: Operator) -> TenantPublic:
    with ctx.write() as s:
        return TenantPublic.of(tenants.create(s, who, ctx.clock.now(), **body.model_dump()))


@router.get("/tenants", response_model=Page[TenantPublic])
def list_tenants(
    ctx: Ctx, who: Operator, limit: Limit = 50, cursor: Cursor = None, active: bool | None = None
) -> Page[TenantPublic]:
    with ctx.read() as s:
        page = tenants.list_page(s, limit=limit, cursor=cursor, active=active)
        return Page(items=[TenantPublic.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/tenants/{name}", response_model=TenantPublic)
def get_tenant(name: TenantName, ctx: Ctx, who: Operator) -> TenantPublic:
    with ctx.read() as s:
        return TenantPublic.of(tenants.get(s, name))


@router.patch("/tenants/{name}", response_model=TenantPublic)
def update_tenant(name: TenantName, body: TenantUpdate, ctx: Ctx, who: Operator) -> TenantPublic:
    with ctx.write() as s:
        row = tenants.update(s, who, ctx.clock.now(), name, **body.model_dump(exclude_unset=True))
        out = TenantPublic.of(row)
    ctx.replan("tenant changed")
    return out


@router.post(
    "/tenants/{name}/deactivate",
    response_model=TenantPublic,
    summary="Deactivate: keys stop working, waiting requests are cancelled",
)
def deactivate_tenant(name: TenantName, ctx: Ctx, who: Operator) -> TenantPublic:
    with ctx.write() as s:
        out = TenantPublic.of(tenants.update(s, who, ctx.clock.now(), name, active=False))
    ctx.replan("tenant deactivated")
    return out


@router.post(
    "/tenants/{name}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyIssued,
    summary="Issue a key; its secret is shown once",
)
def issue_key(name: TenantName, body: ApiKeyCreate, ctx: Ctx, who: Operator) -> ApiKeyIssued:
    with ctx.write() as s:
        issued = api_keys.issue(s, who, ctx.clock.now(), name, name=body.name)
        return ApiKeyIssued(**ApiKeyPublic.of(issued.row).model_dump(), token=issued.token)


@router.get("/tenants/{name}/api-keys", response_model=Page[ApiKeyPublic])
def list_keys(
    name: TenantName, ctx: Ctx, who: Operator, limit: Limit = 50, cursor: Cursor = None
) -> Page[ApiKeyPublic]:
    with ctx.read() as s:
        page = api_keys.list_page(s, name, limit=limit, cursor=cursor)
        return Page(items=[ApiKeyPublic.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.delete(
    "/tenants/{name}/api-keys/{key_id}", response_model=ApiKeyPublic, summary="Revoke a key"
)
def revoke_key(name: TenantName, key_id: Id, ctx: Ctx, who: Operator) -> ApiKeyPublic:
    with ctx.write() as s:
        return ApiKeyPublic.of(api_keys.revoke(s, who, ctx.clock.now(), name, key_id))


@router.put(
    "/tenants/{name}/quotas/{gpu_class}",
    response_model=QuotaPublic,
    summary="Create or replace a quota",
)
def set_quota(
    name: TenantName, gpu_class: ClassName, body: QuotaSet, ctx: Ctx, who: Operator
) -> QuotaPublic:
    with ctx.write() as s:
        now = ctx.clock.now()
        row = quotas.set_quota(s, who, now, name, gpu_class, **body.model_dump())
        out = _quota_public(s, row, now)
    ctx.replan("quota changed")
    return out


@router.post(
    "/tenants/{name}/quotas/{gpu_class}/top-up",
    response_model=QuotaPublic,
    summary="Add GPU-hours to this budget period",
)
def top_up(
    name: TenantName, gpu_class: ClassName, body: TopUp, ctx: Ctx, who: Operator
) -> QuotaPublic:
    with ctx.write() as s:
        now = ctx.clock.now()
        row = quotas.top_up(s, who, now, name, gpu_class, gpu_hours=body.gpu_hours, note=body.note)
        out = _quota_public(s, row, now)
    ctx.replan("budget topped up")
    return out


def _quota_public(s: Session, row: QuotaRow, now: datetime) -> QuotaPublic:
    status = budget.statuses(s, now, [row]).get((row.tenant, row.gpu_class))
    return QuotaPublic.of(row, status)


def _quotas_public(s: Session, rows: list[QuotaRow], now: datetime) -> list[QuotaPublic]:
    statuses = budget.statuses(s, now, rows)
    return [QuotaPublic.of(q, statuses.get((q.tenant, q.gpu_class))) for q in rows]


@router.get("/tenants/{name}/quotas", response_model=list[QuotaPublic])
def list_tenant_quotas(name: TenantName, ctx: Ctx, who: Operator) -> list[QuotaPublic]:
    with ctx.read() as s:
        tenants.get(s, name)
        return _quotas_public(s, quotas.list_all(s, tenant=name), ctx.clock.now())


@router.get("/tenants/{name}/quotas/{gpu_class}", response_model=QuotaPublic)
def get_quota(name: TenantName, gpu_class: ClassName, ctx: Ctx, who: Operator) -> QuotaPublic:
    with ctx.read() as s:
        return _quota_public(s, quotas.get(s, name, gpu_class), ctx.clock.now())


@router.delete("/tenants/{name}/quotas/{gpu_class}", status_code=status.HTTP_204_NO_CONTENT)
def delete_quota(name: TenantName, gpu_class: ClassName, ctx: Ctx, who: Operator) -> Response:
    with ctx.write() as s:
        quotas.delete(s, who, ctx.clock.now(), name, gpu_class)
    ctx.replan("quota removed")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/quotas",
    response_model=list[QuotaPublic],
    summary="Quotas with this period's budget (a tenant sees its own)",
)
def list_quotas(ctx: Ctx, who: User, gpu_class: ClassName | None = None) -> list[QuotaPublic]:
    with ctx.read() as s:
        rows = quotas.list_all(
            s, gpu_class=gpu_class, tenant=None if who.is_operator else who.tenant
        )
        return _quotas_public(s, rows, ctx.clock.now())
