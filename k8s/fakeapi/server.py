"""The HTTP front of the fake API server (see the package docstring: test infrastructure)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from k8s.apisim.errors import ApiError, bad_request, gone, not_found
from k8s.apisim.kubelet import KubeletSim
from k8s.apisim.patch import PATCH_TYPES
from k8s.apisim.store import KINDS, Store
from k8s.fakeapi.faults import Fault, FaultPlan
from k8s.port import Clock, utc_now

_GROUP_PREFIXES = {"/api/v1": "v1", "/apis/coordination.k8s.io/v1": "coordination.k8s.io/v1"}
_WATCH_POLL_S = 0.1


@dataclass(frozen=True)
class Route:
    """A parsed request path."""

    resource: str
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str | None


def parse_path(path: str) -> Route:
    matched = [(p, v) for p, v in _GROUP_PREFIXES.items() if path == p or path.startswith(p + "/")]
    if not matched:
        raise not_found("path", path)
    prefix, api_version = matched[0]
    parts = [p for p in path[len(prefix) :].split("/") if p]
    namespace = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    if not parts or parts[0] not in KINDS or KINDS[parts[0]].api_version != api_version:
        raise not_found("resource", path)
    resource = parts[0]
    if KINDS[resource].namespaced is False and namespace is not None:
        raise not_found("resource", path)
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if len(parts) > 3:
        raise not_found("path", path)
    return Route(resource, namespace, name, sub)


class FakeApiServer:
    """Serves a :class:`Store` on ``127.0.0.1`` at a free port; use as a context manager.

    With ``kubelet_interval`` set, a :class:`KubeletSim` steps every that many seconds, so
    ungated pods get bound and run as they would on a cluster.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Clock = utc_now,
        kubelet_interval: float | None = None,
    ) -> None:
        self.store = store or Store(clock)
        self.faults = FaultPlan()
        self.kubelet = KubeletSim(self.store)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request served
        self._kubelet_interval = kubelet_interval
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._threads: list[threading.Thread] = []
        self._watch_lock = threading.Lock()
        self._watches: set[socket.socket] = set()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApiServer:
        serve = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fakeapi", daemon=True
        )
        serve.start()
        self._threads.append(serve)
        if self._kubelet_interval:
            sim = threading.Thread(target=self._run_kubelet, name="fakeapi-kubelet", daemon=True)
            sim.start()
            self._threads.append(sim)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def open_watches(self) -> int:
        with self._watch_lock:
            return len(self._watches)

    def drop_watches(self) -> int:
        """Cut every open watch stream, as a network fault or an API server restart would;
        returns how many were cut."""
        with self._watch_lock:
            watches = list(self._watches)
        for sock in watches:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(watches)

    def _track_watch(self, sock: socket.socket, open_: bool) -> None:
        with self._watch_lock:
            if open_:
                self._watches.add(sock)
            else:
                self._watches.discard(sock)

    def _run_kubelet(self) -> None:
        assert self._kubelet_interval is not None
        while not self._stopping.wait(self._kubelet_interval):
            with suppress(ApiError):  # a pod deleted between list and write: next step
                self.kubelet.step()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 drops connection attempts when a client opens several at once;
    # the dropped SYN is retried after a second, which looks like a slow API server.
    request_queue_size = 128
    fake: FakeApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients drop idle keep-alive connections and watches all the time: not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm and delayed ACKs
    # every answer would stall ~40 ms on loopback.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``FakeApiServer.requests`` instead of a log."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # -- dispatch ----------------------------------------------------------------------
    def _serve(self, method: str) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        is_watch = query.get("watch") in ("1", "true", "True")
        body = self._read_body()
        fake.requests.append((method, split.path))
        fault = fake.faults.take(method, split.path, is_watch)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
            if not fault.apply:
                self.close_connection = True
                return
        try:
            if split.path == "/version":
                self._send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake"})
                return
            if fault is not None and fault.status is not None:
                raise ApiError(fault.status, _reason(fault.status), "injected fault")
            route = parse_path(split.path)
            if is_watch and method == "GET" and route.name is None:
                self._watch(route, query, fault)
                return
            code, result = self._handle(method, route, query, body)
            self._send(code, result)
        except ApiError as err:
            self._send(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise bad_request(f"invalid JSON body: {exc}") from exc

    def _handle(
        self, method: str, route: Route, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        store = self.server.fake.store
        kind = KINDS[route.resource]
        ns = route.namespace or ""
        if route.subresource is not None:
            if route.resource == "pods" and route.subresource == "eviction" and method == "POST":
                if route.name is None:
                    raise not_found("pods", "")
                store.get("pods", ns, route.name)  # 404 before anything else
                return 201, store.evict(ns, route.name, body or {})
            raise ApiError(
                405, "MethodNotAllowed", f"{method} {route.subresource} is not supported"
            )
        if route.name is None:
            if method == "GET":
                items, rv = store.list(
                    route.resource,
                    route.namespace if kind.namespaced else None,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                )
                return 200, {
                    "kind": f"{kind.kind}List",
                    "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }
            if method == "POST":
                if not isinstance(body, dict):
                    raise bad_request("a JSON object is required")
                return 201, store.create(route.resource, ns, body)
            raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
        if method == "GET":
            return 200, store.get(route.resource, ns, route.name)
        if method == "PUT":
            if not isinstance(body, dict):
                raise bad_request("a JSON object is required")
            return 200, store.update(route.resource, ns, route.name, body)
        if method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format: {content_type}",
                )
            return 200, store.patch(route.resource, ns, route.name, content_type, body)
        if method == "DELETE":
            options = body if isinstance(body, dict) else {}
            grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
            return 200, store.delete(
                route.resource,
                ns,
                route.name,
                None if grace is None else int(grace),
                options.get("preconditions"),
            )
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # -- responses ---------------------------------------------------------------------
    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, route: Route, query: dict[str, str], fault: Fault | None) -> None:
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True")
        namespace = route.namespace if KINDS[route.resource].namespaced else None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        fake = self.server.fake
        fake._track_watch(self.connection, True)
        try:
            if fault is not None and fault.expire:
                self._chunk(_event("ERROR", gone("too old resource version (injected)").status()))
                self._chunk(b"")
                return
            for line in self._watch_lines(route.resource, namespace, query, timeout, bookmarks):
                if fault is not None and fault.drop_after is not None and sent >= fault.drop_after:
                    # Cut the stream mid-way: no terminating chunk, connection reset.
                    self.close_connection = True
                    with suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._chunk(line)
                sent += 1
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            fake._track_watch(self.connection, False)

    def _watch_lines(
        self,
        resource: str,
        namespace: str | None,
        query: dict[str, str],
        timeout: float,
        bookmarks: bool,
    ) -> Iterator[bytes]:
        fake = self.server.fake
        store = fake.store
        selectors = {
            "namespace": namespace,
            "label_selector": query.get("labelSelector"),
            "field_selector": query.get("fieldSelector"),
        }
        rv_text = query.get("resourceVersion") or "0"
        if rv_text == "0":
            items, rv = store.list(
                resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
            for item in items:
                yield _event("ADDED", item)
            since = int(rv)
        else:
            since = int(rv_text)
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        while not fake._stopping.is_set() and time.monotonic() < deadline:
            try:
                changes, scanned = store.changes_since(
                    resource, since, timeout=_WATCH_POLL_S, **selectors
                )
            except ApiError as err:
                yield _event("ERROR", err.status())
                return
            for kind, obj, _rv in changes:
                yield _event(kind, obj)
            since = scanned
            if bookmarks and time.monotonic() - last_bookmark > 1.0:
                last_bookmark = time.monotonic()
                kind_name = KINDS[resource].kind
                yield _event(
                    "BOOKMARK",
                    {
                        "kind": kind_name,
                        "apiVersion": KINDS[resource].api_version,
                        "metadata": {"resourceVersion": str(since)},
                    },
                )

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _reason(code: int) -> str:
    return {
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
        410: "Expired",
    }.get(code, "Unknown")
