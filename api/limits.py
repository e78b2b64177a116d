"""Request body size limit (ASGI middleware) and per-key rate limiting (token buckets)."""

from __future__ import annotations

import json
import math
import threading
import time
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


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``.

    In memory, per server process: with several replicas each enforces its own buckets.
    """

    def __init__(self, rate: float, burst: float, clock: Any = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited` saying when to retry."""
        if self.rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self.rate
                raise RateLimited(
                    f"more than {self.rate:g} requests per second for this key; slow down",
                    retry_after_s=max(1, math.ceil(wait)),
                )
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 100_000:  # keys come and go; forget idle full buckets
                self._buckets = {
                    k: v for k, v in self._buckets.items() if v[0] < self.burst or k == key
                }
