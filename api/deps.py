"""What routers depend on: the app context, the caller, and transactions."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.batch import Credential, WriteBatcher
from api.limits import RateLimiter
from scheduler.clock import Clock
from scheduler.db import read_once, session_scope
from scheduler.domain import AGENT, OPERATOR, Principal, Role
from scheduler.errors import Forbidden, Unauthorized
from scheduler.leader import LeaderLease
from scheduler.runner import CycleRunner
from scheduler.services import api_keys
from scheduler.services.queue_order import QueueOrders
from scheduler.settings import Settings

if TYPE_CHECKING:
    from api.scheduler_process import RemoteScheduler


@dataclass
class AppContext:
    """Everything the API needs, built once in ``create_app``."""

    settings: Settings
    engine: Engine
    clock: Clock
    runner: CycleRunner | None = None
    rate_limiter: RateLimiter | None = None
    #: Writes of many requests in one transaction (see :mod:`api.batch`); set in create_app.
    writes: WriteBatcher | None = None
    #: The scheduler child of ``gpupool serve`` when cycles run in their own process.
    scheduler: RemoteScheduler | None = None
    #: This replica's leader lease (its runner's, or its scheduler child's identity).
    lease: LeaderLease | None = None
    extras: dict[str, object] = field(default_factory=dict)
    #: The waiting queues polls count positions against (see services/queue_order.py).
    queues: QueueOrders = field(init=False)

    def __post_init__(self) -> None:
        self.queues = QueueOrders(self.settings.queue_position_max_age_s)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with session_scope(self.engine, write=True) as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with session_scope(self.engine, write=False) as session:
            yield session

    def replan(self, reason: str) -> None:
        """Ask for a scheduling cycle (debounced): from the runner in this process, else from
        the scheduler child and, through the database, from whichever replica leads."""
        if self.runner is not None:
            self.runner.trigger(reason)
            return
        if self.scheduler is not None:
            self.scheduler.trigger()
            if self.lease is not None:
                self.lease.request_replan()  # for another replica that leads (never blocks)


# The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency
# in the thread pool, and each such hop costs more than the check itself.


async def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token> header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def credential(
    ctx: Ctx,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Credential:
    """The caller's bearer token: the operator's and the agents' are resolved here; a tenant
    key is looked up later, by :func:`authenticate` or in a write batch."""
    token = _bearer(authorization)
    operator = ctx.settings.operator_token.get_secret_value()
    if operator and hmac.compare_digest(token.encode(), operator.encode()):
        return Credential(token, OPERATOR)
    agent = ctx.settings.agent_token.get_secret_value()
    if agent and hmac.compare_digest(token.encode(), agent.encode()):
        return Credential(token, AGENT)
    return Credential(token)


Token = Annotated[Credential, Depends(credential)]


async def authenticate(ctx: Ctx, token: Token) -> Principal:
    if token.principal is not None:
        return token.principal
    who = await run_in_threadpool(_tenant_key, ctx, token.token)
    if ctx.rate_limiter is not None:
        ctx.rate_limiter.check(f"key:{who.key_id}")
    return who


def _tenant_key(ctx: AppContext, token: str) -> Principal:
    with read_once(ctx.engine) as conn:
        return api_keys.authenticate(conn, token)


Caller = Annotated[Principal, Depends(authenticate)]


async def require_operator(who: Caller) -> Principal:
    if not who.is_operator:
        raise Forbidden("this endpoint is for the hub operator")
    return who


async def require_user(who: Caller) -> Principal:
    """Tenants and the operator (not node agents)."""
    return user_only(who)


def user_only(who: Principal) -> Principal:
    """:func:`require_user` for work that resolves its caller itself (a write batch)."""
    if who.role is Role.AGENT:
        raise Forbidden("node agent tokens may only push usage samples")
    return who


async def require_agent(who: Caller) -> Principal:
    if who.role not in (Role.AGENT, Role.OPERATOR):
        raise Forbidden("this endpoint is for node agents")
    return who


Operator = Annotated[Principal, Depends(require_operator)]
User = Annotated[Principal, Depends(require_user)]
Agent = Annotated[Principal, Depends(require_agent)]
