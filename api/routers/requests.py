"""Requests (tenants; the operator sees all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlmodel import Session

from api.deps import AppContext, Ctx, Token, User, user_only
from api.retry import RetryRoute
from api.routers.params import Cursor, Limit
from api.schemas.common import PROBLEM_RESPONSES, ClassName, Id, Page, TenantName
from api.schemas.requests import (
    CompleteBody,
    EventPublic,
    ExplainPublic,
    ExtendBody,
    RequestCreate,
    RequestPublic,
)
from scheduler.domain import Principal, RequestState
from scheduler.errors import GpupoolError
from scheduler.services import explain, extend, requests
from scheduler.services.requests import ReservationView
from scheduler.services.submit import NewRequest, Submission, Submitted, submit_many

router = APIRouter(
    prefix="/v1", tags=["requests"], responses=PROBLEM_RESPONSES, route_class=RetryRoute
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Retries with the same key return the first request instead of a new one.",
    ),
]


@router.post(
    "/requests",
    status_code=status.HTTP_201_CREATED,
    response_model=RequestPublic,
    responses={200: {"description": "A retry of an earlier submit with the same Idempotency-Key"}},
)
async def submit(
    body: RequestCreate,
    ctx: Ctx,
    token: Token,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> RequestPublic:
    # Written in one transaction with the submits that arrive meanwhile (api/batch.py).
    assert ctx.writes is not None
    ask = _Submit(ctx, body.to_domain(), body.tenant, idempotency_key)
    result, reservation = await ctx.writes.run(token, _submit_all, ask)
    out = RequestPublic.of(result.columns, reservation)
    response.headers["Location"] = f"/v1/requests/{out.id}"
    if result.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    else:
        ctx.replan("request submitted")
    return out


@dataclass(frozen=True, slots=True)
class _Submit:
    ctx: AppContext
    ask: NewRequest
    tenant: str | None
    idempotency_key: str | None


def _submit_all(
    session: Session, items: list[tuple[Principal, _Submit]]
) -> list[tuple[Submitted, ReservationView | None] | GpupoolError]:
    """The submits of one write batch (all of one app), with one call of ``submit_many``."""
    out: list[tuple[Submitted, ReservationView | None] | GpupoolError | None] = [None] * len(items)
    submissions: list[Submission] = []
    at: list[int] = []
    for i, (who, item) in enumerate(items):
        try:
            user_only(who)
        except GpupoolError as exc:
            out[i] = exc
            continue
        at.append(i)
        submissions.append(Submission(who, item.ask, item.tenant, item.idempotency_key))
    ctx = items[0][1].ctx
    stored = submit_many(session, ctx.clock.now(), ctx.settings, submissions)
    for i, result in zip(at, stored, strict=True):
        if isinstance(result, GpupoolError):
            out[i] = result
        elif result.replayed:  # a retry: answered as the request stands now
            out[i] = (result, requests.current_reservation(session, result.row.id or 0))
        else:
            out[i] = (result, None)
    return [r for r in out if r is not None]


@router.get("/requests", response_model=Page[RequestPublic])
def list_requests(
    ctx: Ctx,
    who: User,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: RequestState | None = None,
    gpu_class: ClassName | None = None,
    tenant: Annotated[TenantName | None, Query(description="Operator only.")] = None,
) -> Page[RequestPublic]:
    with ctx.read() as s:
        page = requests.list_page(
            s, who, limit=limit, cursor=cursor, state=state, tenant=tenant, gpu_class=gpu_class
        )
        views = requests.current_reservations(s, [r.id or 0 for r in page.items])
        return Page(
            items=[RequestPublic.of(r, views.get(r.id or 0)) for r in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/requests/{request_id}", response_model=RequestPublic)
def get_request(request_id: Id, ctx: Ctx, who: User) -> RequestPublic:
    with ctx.read() as s:
        row = requests.get_visible(s, who, request_id)
        return RequestPublic.of(
            row, requests.current_reservation(s, request_id), ctx.queues.position(s, row)
        )


@router.get(
    "/requests/{request_id}/explain",
    response_model=ExplainPublic,
    summary="Why it waits: the binding constraint and who holds the GPUs",
)
def explain_request(request_id: Id, ctx: Ctx, who: User) -> ExplainPublic:
    with ctx.read() as s:
        return ExplainPublic.of(explain.explain(s, who, ctx.clock.now(), ctx.settings, request_id))


@router.post(
    "/requests/{request_id}/extend",
    response_model=RequestPublic,
    summary="Keep an active window open longer, if the plan has room",
    responses={409: {"description": "No room in the plan, or the request is not active"}},
)
def extend_request(request_id: Id, body: ExtendBody, ctx: Ctx, who: User) -> RequestPublic:
    with ctx.write() as s:
        row = extend.extend(s, who, ctx.clock.now(), ctx.settings, request_id, body.duration)
        out = RequestPublic.of(row, requests.current_reservation(s, request_id))
    ctx.replan("window extended")
    return out


@router.get("/requests/{request_id}/events", response_model=list[EventPublic])
def request_events(request_id: Id, ctx: Ctx, who: User) -> list[EventPublic]:
    with ctx.read() as s:
        return [EventPublic.of(e) for e in requests.events(s, who, request_id)]


@router.post("/requests/{request_id}/cancel", response_model=RequestPublic)
def cancel(request_id: Id, ctx: Ctx, who: User) -> RequestPublic:
    with ctx.write() as s:
        row = requests.cancel(s, who, ctx.clock.now(), request_id)
        out = RequestPublic.of(row, requests.current_reservation(s, request_id))
    ctx.replan("request cancelled")
    return out


@router.post(
    "/requests/{request_id}/complete",
    response_model=RequestPublic,
    summary="The work finished: end the reservation now and free its GPUs",
)
def complete(
    request_id: Id, ctx: Ctx, who: User, body: CompleteBody | None = None
) -> RequestPublic:
    with ctx.write() as s:
        row = requests.complete(
            s, who, ctx.clock.now(), request_id, detail=body.detail if body else ""
        )
        out = RequestPublic.of(row, requests.current_reservation(s, request_id))
    ctx.replan("request completed")
    return out
