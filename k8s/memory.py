"""An in-memory :class:`~k8s.port.SchedulerPort`: the scheduler side of tests and benchmarks.

It holds requests and tenants that a test sets directly, and records what the controller
reports, so a test can assert on it. Thread-safe, because the controller may run in its own
thread while a test changes requests.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from k8s.port import ObservedNode, RequestState, RequestView


@dataclass(frozen=True)
class Report:
    """One outcome the controller reported for a request."""

    request_id: int
    outcome: RequestState
    text: str


class InMemoryScheduler:
    """Requests, tenants and the node pool kept in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, RequestView] = {}
        self._tenants: dict[str, bool] = {}
        self._nodes: dict[str, ObservedNode] = {}
        self.reports: list[Report] = []
        self.node_syncs = 0
        self.pool_changes = 0

    # -- test set-up -------------------------------------------------------------------
    def put_tenant(self, name: str, active: bool = True) -> None:
        with self._lock:
            self._tenants[name] = active

    def put_request(self, request: RequestView) -> None:
        with self._lock:
            self._requests[request.id] = request

    def set_state(self, request_id: int, state: RequestState) -> None:
        with self._lock:
            self._requests[request_id] = replace(self._requests[request_id], state=state)

    def set_window(self, request_id: int, start: datetime, end: datetime) -> None:
        with self._lock:
            self._requests[request_id] = replace(
                self._requests[request_id], window_start=start, window_end=end
            )

    def request(self, request_id: int) -> RequestView:
        with self._lock:
            return self._requests[request_id]

    @property
    def nodes(self) -> dict[str, ObservedNode]:
        with self._lock:
            return dict(self._nodes)

    # -- SchedulerPort -----------------------------------------------------------------
    def get_requests(self, ids: Collection[int]) -> Mapping[int, RequestView]:
        with self._lock:
            return {i: self._requests[i] for i in ids if i in self._requests}

    def tenants(self) -> Mapping[str, bool]:
        with self._lock:
            return dict(self._tenants)

    def sync_nodes(self, nodes: Sequence[ObservedNode]) -> bool:
        with self._lock:
            new = {n.name: n for n in nodes}
            changed = new != self._nodes
            self._nodes = new
            self.node_syncs += 1
            self.pool_changes += int(changed)
            return changed

    def report_succeeded(self, request_id: int, detail: str) -> None:
        self._finish(request_id, RequestState.COMPLETED, detail)

    def report_failed(self, request_id: int, reason: str) -> None:
        self._finish(request_id, RequestState.FAILED, reason)

    def planned_gpus_by_tenant(self) -> Mapping[str, int]:
        with self._lock:
            totals: dict[str, int] = {}
            for r in self._requests.values():
                if r.state in (RequestState.PLANNED, RequestState.ACTIVE):
                    totals[r.tenant] = totals.get(r.tenant, 0) + sum(r.allocation.values())
            return totals

    def _finish(self, request_id: int, state: RequestState, text: str) -> None:
        # Like the real services: only an active request can complete or fail; a late or
        # repeated report for an ended one changes nothing.
        with self._lock:
            self.reports.append(Report(request_id, state, text))
            current = self._requests.get(request_id)
            if current is not None and current.state is RequestState.ACTIVE:
                self._requests[request_id] = replace(current, state=state)
