"""Writes that arrive together go in one transaction (group commit), written by one thread.

A plain ``def`` endpoint costs two hand-overs between the event loop and a worker thread
per request (the key lookup, then the endpoint), and each costs more CPU than the
statements it runs: on two cores, FastAPI's own overhead per request was 0.35 ms for an
``async def`` endpoint and 0.73 ms for a ``def`` one. Under load the API's hottest write
(``POST /v1/requests``) therefore goes through :class:`WriteBatcher`: the endpoint, on the
event loop, hands what it asks and the caller's unresolved credential to this process's
batch thread; that thread takes everything queued meanwhile, looks up all of its API keys in
one statement, writes them all in one transaction (items of one kind with one call of their
``write_many``, which for submits means one INSERT for all on PostgreSQL: see
:func:`scheduler.services.submit.submit_many`), commits once, and wakes the event loop
once for all of them. Alone, a request is a batch of one.

Every item is answered only after the commit that made it durable. A refusal (a
:class:`~scheduler.errors.GpupoolError` that ``write_many`` returns in an item's place, having
written nothing for it) fails that item only. An exception fails the transaction; a batch of
several is then written again one item per transaction, so an item fails alone for what it
did itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.limits import RateLimiter
from scheduler import lifecycle
from scheduler.db import read_once, session_scope
from scheduler.domain import Principal
from scheduler.errors import GpupoolError
from scheduler.services import api_keys

P = TypeVar("P")
R = TypeVar("R")

#: Writes items of one kind in the caller's transaction: for each (caller, payload), its
#: result or the refusal (written nothing) in its place, in order.
WriteMany = Callable[[Session, list[tuple[Principal, P]]], list[R | GpupoolError]]

#: The most items one transaction writes (on SQLite other writers wait that long).
MAX_ITEMS = 64
#: A batch thread with nothing to do for this long ends; the next item starts another.
IDLE_EXIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Credential:
    """A caller's bearer token: resolved already (operator, node agent) or a tenant's API
    key still to be looked up."""

    token: str = field(repr=False)  # a secret: never in a log line
    principal: Principal | None = None


@dataclass(slots=True)
class _Item(Generic[P, R]):
    credential: Credential
    write_many: WriteMany[P, R]
    payload: P
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]
    who: Principal | None = None
    outcome: tuple[bool, Any] | None = field(default=None)  # (ok, result or exception)


class WriteBatcher:
    """This process's batch thread for one database; see the module's docstring."""

    def __init__(
        self,
        engine: Engine,
        limiter: RateLimiter | None = None,
        *,
        max_items: int = MAX_ITEMS,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> None:
        self.engine = engine
        self.limiter = limiter
        self.max_items = max_items
        self.idle_exit_s = idle_exit_s
        self._queue: deque[_Item[Any, Any]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        """Items waiting for the next transaction."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether the batch thread is there (it ends when idle)."""
        return self._thread is not None

    async def run(self, credential: Credential, write_many: WriteMany[P, R], payload: P) -> R:
        """Write ``payload`` with ``write_many`` in a transaction shared with the items
        queued with it; its result once that transaction committed, else its refusal, the
        caller's key's, or the transaction's error, raised."""
        loop = asyncio.get_running_loop()
        item: _Item[P, R] = _Item(credential, write_many, payload, loop, loop.create_future())
        with self._wake:
            if self._stopping:
                raise RuntimeError("the server is stopping")
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="gpupool-write-batch", daemon=True
                )
                self._thread.start()
            else:
                self._wake.notify()
        return await item.future

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread (a later item starts another: an app
        may be started again)."""
        with self._wake:
            self._stopping = True
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            self._stopping = False

    # -- the batch thread

    def _serve(self) -> None:
        while True:
            with self._wake:
                if not self._queue and not self._stopping:
                    self._wake.wait(self.idle_exit_s)
                if not self._queue:
                    self._thread = None
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_items, len(self._queue)))
                ]
            try:
                self._write(batch)
            except BaseException as exc:  # every caller must hear back
                for item in batch:
                    if item.outcome is None:
                        item.outcome = (False, exc)
            _answer(batch)

    def _write(self, batch: list[_Item[Any, Any]]) -> None:
        ready = self._callers(batch)
        if not ready:
            return
        try:
            self._transaction(ready)
        except Exception as exc:
            if len(ready) == 1:
                ready[0].outcome = (False, exc)
                return
            for item in ready:  # on its own, each item fails only for itself
                try:
                    self._transaction([item])
                except Exception as alone:
                    item.outcome = (False, alone)

    def _callers(self, batch: list[_Item[Any, Any]]) -> list[_Item[Any, Any]]:
        """Resolve every item's caller (API keys in one statement) and apply the rate limit;
        the items that may go on."""
        tokens = {i.credential.token for i in batch if i.credential.principal is None}
        found: dict[str, Principal | GpupoolError] = {}
        if tokens:
            with read_once(self.engine) as conn:
                found = api_keys.authenticate_many(conn, tokens)
        ready = []
        for item in batch:
            who = item.credential.principal or found[item.credential.token]
            try:
                if isinstance(who, GpupoolError):
                    raise who
                if self.limiter is not None and who.key_id is not None:
                    self.limiter.check(f"key:{who.key_id}")
            except GpupoolError as exc:
                item.outcome = (False, exc)
                continue
            item.who = who
            ready.append(item)
        return ready

    def _transaction(self, items: list[_Item[Any, Any]]) -> None:
        by_kind: dict[WriteMany[Any, Any], list[_Item[Any, Any]]] = {}
        for item in items:
            by_kind.setdefault(item.write_many, []).append(item)
        done: list[tuple[_Item[Any, Any], Any]] = []
        with session_scope(self.engine) as session, lifecycle.buffered_events(session):
            for write_many, kind in by_kind.items():
                # strict: a write_many that answers for fewer items fails the transaction;
                # every item's who was set by _callers()
                done += zip(
                    kind,
                    write_many(session, [(cast(Principal, i.who), i.payload) for i in kind]),
                    strict=True,
                )
        for item, result in done:  # committed: now they may be answered
            item.outcome = (not isinstance(result, GpupoolError), result)


def _answer(batch: list[_Item[Any, Any]]) -> None:
    """Wake each event loop once for all of its items."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Item[Any, Any]]] = {}
    for item in batch:
        by_loop.setdefault(item.loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[_Item[Any, Any]]) -> None:
    for item in items:
        if item.future.done():  # the caller went away (cancelled)
            continue
        ok, value = item.outcome or (False, RuntimeError("no outcome"))
        if ok:
            item.future.set_result(value)
        else:
            item.future.set_exception(value)
