"""A lean HTTP/1.1 client for the load benchmarks.

The benchmarks run the load generator on the same small machine as the server, so every
millisecond the client spends is taken from the server: httpx costs about 3 ms of CPU per
request here, more than half of what the server spends on a submit. This client keeps one
keep-alive connection per simulated caller, writes each request in one piece and reads the
response by its ``Content-Length``; it does just what the benchmarks need (JSON bodies,
no redirects, no TLS, no chunked responses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class LoadClientError(Exception):
    """The connection failed or the response could not be read."""


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Connection:
    """One keep-alive connection; reconnects when the server closed it. One request at a time."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must be http://host:port, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(
        self, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        return await self.request("POST", path, json, headers)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return await self.request("GET", path, None, headers)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        if body is not None or method == "POST":
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(payload)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            return await asyncio.wait_for(self._exchange(head + payload), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise LoadClientError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        except TimeoutError as exc:
            await self.close()
            raise LoadClientError(f"{method} {path}: no response in {self.timeout} s") from exc

    async def _exchange(self, data: bytes) -> Response:
        fresh = self._writer is None
        if fresh:
            await self._connect()
        try:
            return await self._send(data)
        except (ConnectionError, asyncio.IncompleteReadError):
            if fresh:
                raise
            # The server closed an idle keep-alive connection: one retry on a new one. The
            # request never reached a handler when the connection was already closed.
            await self.close()
            await self._connect()
            return await self._send(data)

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def _send(self, data: bytes) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(data)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise LoadClientError(f"malformed status line {status_line!r}") from exc
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            raise LoadClientError("chunked responses are not supported")
        length = int(headers.get("content-length", "0"))
        content = await self._reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, content)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await writer.wait_closed()
