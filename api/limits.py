"""Request body size limit (ASGI middleware) and per-key rate limiting (token buckets)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from array import array
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.errors import RateLimited


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 problem+json, before they are read whole:
    by Content-Length when it is given, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        await self._refuse(send)
                        return
                except ValueError:
                    pass
        seen = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer 413 now and tell the app the client went away, so it stops
                    # reading; whatever it tries to send afterwards is dropped.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "urn:gpupool:problem:too_large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"The request body is larger than {self.max_bytes} bytes.",
                "code": "too_large",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BucketTable:
    """Token buckets of the rate limit, one per key, that every API process of a server
    draws on: with ``context`` (a multiprocessing context) the table lives in shared memory
    and may be handed to the processes that context starts; without, in this process only.

    Open addressing over ``slots`` entries of (key hash, tokens, last refill). Slots are
    never emptied, only taken over: when the few slots a key may use all belong to others,
    it takes the one refilled longest ago. A bucket idle that long has refilled, so this
    forgets nothing a busy key is owed; the table holds far more keys than a hub has.
    """

    PROBES = 32

    def __init__(self, slots: int = 4096, context: Any = None) -> None:
        self.slots = slots
        if context is None:
            self._cells: Any = array("d", bytes(8 * 3 * slots))
            self._lock: Any = threading.Lock()
        else:
            self._cells = context.RawArray("d", 3 * slots)
            self._lock = context.Lock()

    def take(self, key: str, now: float, rate: float, burst: float) -> float:
        """Take a token from ``key``'s bucket: 0 when taken, else the seconds until one is
        there. ``now`` must come from a clock every process shares (``time.monotonic``)."""
        digest = hashlib.blake2b(key.encode(), digest_size=6).digest()
        tag = float(int.from_bytes(digest, "big") + 1)  # exact in a double; 0 = free
        cells = self._cells
        first = int(tag) % self.slots
        with self._lock:
            at = -1
            oldest = math.inf
            for k in range(self.PROBES):
                i = 3 * ((first + k) % self.slots)
                if cells[i] in (tag, 0.0):  # a key lies before the first free slot
                    at = i
                    break
                if cells[i + 2] < oldest:
                    at, oldest = i, cells[i + 2]
            if cells[at] != tag:
                cells[at], cells[at + 1], cells[at + 2] = tag, burst, now
            tokens = min(burst, cells[at + 1] + max(0.0, now - cells[at + 2]) * rate)
            cells[at + 2] = now
            if tokens < 1:
                cells[at + 1] = tokens
                return float((1 - tokens) / rate)
            cells[at + 1] = tokens - 1
            return 0.0


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``.

    The buckets are ``table``'s: shared by the API processes of one server when it is a
    shared table, else this process's own. Each replica keeps its own.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        table: BucketTable | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.table = table or BucketTable()
        self._clock = clock

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited` saying when to retry."""
        if self.rate <= 0:
            return
        wait = self.table.take(key, self._clock(), self.rate, self.burst)
        if wait > 0:
            raise RateLimited(
                f"more than {self.rate:g} requests per second for this key; slow down",
                retry_after_s=max(1, math.ceil(wait)),
            )
