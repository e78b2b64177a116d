"""Retry a request whose transaction PostgreSQL rolled back to resolve a conflict.

PostgreSQL may end one of two transactions that wait on each other (deadlock, SQLSTATE
40P01) or that cannot be serialised (40001). The transaction was rolled back as a whole, so
running the endpoint again is safe and is what PostgreSQL's documentation asks of clients.
Routers whose endpoints write in one transaction use :class:`RetryRoute`; a request that
still conflicts after the last attempt is answered 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

ATTEMPTS = 3
PAUSE_S = 0.02


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction PostgreSQL rolled back to resolve a conflict."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return str(getattr(orig, "sqlstate", "") or "").startswith("40")


class RetryRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def retrying(request: Request) -> Response:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return await handler(request)
                except DBAPIError as exc:
                    if not is_transient(exc) or attempt == ATTEMPTS:
                        raise
                    log.info(
                        "%s %s: transaction rolled back by the database (%s); retry %d",
                        request.method,
                        request.url.path,
                        getattr(exc.orig, "sqlstate", "?"),
                        attempt,
                    )
                    await asyncio.sleep(PAUSE_S * attempt)
            raise AssertionError("unreachable")

        return retrying
