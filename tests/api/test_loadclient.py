"""The benchmarks' lean HTTP client, against a small asyncio server that records what it got."""

from __future__ import annotations

import asyncio
import json

import pytest

from api.loadclient import Connection, LoadClientError
from api.process import free_port


class Server:
    """Answers every request with its own body and a count; can close after N requests."""

    def __init__(self, close_after: int | None = None, close_header: bool = False) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.close_after = close_after
        self.close_header = close_header

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head[:-4].decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((line, headers, body))
                served += 1
                out = json.dumps({"n": len(self.requests), "echo": body.decode()}).encode()
                extra = "Connection: close\r\n" if self.close_header else ""
                writer.write(
                    f"HTTP/1.1 201 Created\r\nContent-Length: {len(out)}\r\n{extra}\r\n".encode()
                    + out
                )
                await writer.drain()
                if self.close_header or (self.close_after and served >= self.close_after):
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


async def _with_server(server: Server, body) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    srv = await asyncio.start_server(server.handle, "127.0.0.1", port)
    async with srv:
        await body(f"http://127.0.0.1:{port}")


def test_keeps_one_connection_and_sends_json():
    server = Server()

    async def body(base: str) -> None:
        conn = Connection(base)
        r1 = await conn.post("/v1/requests", json={"gpus": 2}, headers={"Authorization": "B x"})
        r2 = await conn.get("/v1/requests/1")
        await conn.close()
        assert (r1.status_code, r1.json()["n"], r2.json()["n"]) == (201, 1, 2)
        assert json.loads(r1.json()["echo"]) == {"gpus": 2}

    asyncio.run(_with_server(server, body))
    assert server.connections == 1
    (line, headers, _), (line2, headers2, _) = server.requests
    assert line == "POST /v1/requests HTTP/1.1" and line2 == "GET /v1/requests/1 HTTP/1.1"
    assert headers["authorization"] == "B x" and headers["content-type"] == "application/json"
    assert "content-length" not in headers2


def test_reconnects_when_the_server_closed_the_connection():
    server = Server(close_after=1)

    async def body(base: str) -> None:
        conn = Connection(base)
        for _ in range(3):
            assert (await conn.post("/x", json={})).status_code == 201
            await asyncio.sleep(0.05)  # let the close arrive before the next request
        await conn.close()

    asyncio.run(_with_server(server, body))
    assert len(server.requests) == 3 and server.connections == 3


def test_connection_close_header_opens_a_new_connection():
    server = Server(close_header=True)

    async def body(base: str) -> None:
        conn = Connection(base)
        assert [(await conn.get("/x")).json()["n"] for _ in range(2)] == [1, 2]

    asyncio.run(_with_server(server, body))
    assert server.connections == 2


def test_refused_connection_is_a_load_client_error():
    async def body() -> None:
        conn = Connection(f"http://127.0.0.1:{free_port()}", timeout=5)
        with pytest.raises(LoadClientError, match="POST /v1/requests"):
            await conn.post("/v1/requests", json={})

    asyncio.run(body())


def test_rejects_other_schemes():
    with pytest.raises(ValueError, match="http://host:port"):
        Connection("https://example.org")
