"""The controller's :class:`~k8s.port.SchedulerPort` on the scheduler's database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from k8s.port import ObservedNode, RequestState, RequestView
from scheduler.db import session_scope
from scheduler.domain import CONTROLLER, ReservationState
from scheduler.domain import RequestState as State
from scheduler.errors import Conflict, InvalidState, NotFound
from scheduler.services import inventory
from scheduler.services import requests as request_service
from scheduler.tables import RequestRow, ReservationRow, TenantRow

log = logging.getLogger(__name__)


class DatabasePort:
    """Reads requests and tenants from the database and reports pod outcomes through the
    scheduler's services. ``on_change`` is called when the scheduler should re-plan.

    ``discover_nodes=False`` (the embedded simulated cluster) leaves the inventory to the
    operator: the simulated nodes mirror the static ones, so there is nothing to learn.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        *,
        on_change: Callable[[str], None] = lambda reason: None,
        discover_nodes: bool = True,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._on_change = on_change
        self._discover = discover_nodes

    def get_requests(self, ids: Collection[int]) -> Mapping[int, RequestView]:
        if not ids:
            return {}
        with session_scope(self._engine, write=False) as s:
            rows = list(s.exec(select(RequestRow).where(col(RequestRow.id).in_(list(ids)))))
            views = request_service.current_reservations(s, [r.id or 0 for r in rows])
        out: dict[int, RequestView] = {}
        for r in rows:
            view = views.get(r.id or 0)
            live = view is not None and view.row.state != ReservationState.ENDED.value
            out[r.id or 0] = RequestView(
                id=r.id or 0,
                tenant=r.tenant,
                state=RequestState(r.state),
                gpus_per_node=r.gpus_per_node,
                allocation=dict(view.allocation) if live and view else {},
                window_start=view.row.start if live and view else None,
                window_end=view.row.end if live and view else None,
            )
        return out

    def tenants(self) -> Mapping[str, bool]:
        with session_scope(self._engine, write=False) as s:
            return {t.name: t.active for t in s.exec(select(TenantRow))}

    def sync_nodes(self, nodes: Sequence[ObservedNode]) -> bool:
        if not self._discover:
            return False
        found = [
            inventory.DiscoveredNode(n.name, n.gpu_class, n.gpus, n.schedulable, n.reason)
            for n in nodes
        ]
        with session_scope(self._engine) as s:
            changed = inventory.sync_discovered(s, CONTROLLER, self._clock(), found)
        if changed:
            self._on_change("cluster nodes changed")
        return changed

    def report_succeeded(self, request_id: int, detail: str) -> None:
        self._finish(request_id, succeeded=True, text=detail or "all pods succeeded")

    def report_failed(self, request_id: int, reason: str) -> None:
        self._finish(request_id, succeeded=False, text=reason or "a pod failed")

    def _finish(self, request_id: int, *, succeeded: bool, text: str) -> None:
        try:
            with session_scope(self._engine) as s:
                row = s.get(RequestRow, request_id)
                if row is None or row.state != State.ACTIVE.value:
                    return  # only an active request can end this way; a late report is moot
                now = self._clock()
                if succeeded:
                    request_service.complete(s, CONTROLLER, now, request_id, detail=text)
                else:
                    request_service.fail(s, CONTROLLER, now, request_id, text)
        except (InvalidState, NotFound, Conflict) as exc:
            log.info("pod outcome for request %s not applied: %s", request_id, exc)
            return
        self._on_change(f"request {request_id} ended")

    def planned_gpus_by_tenant(self) -> Mapping[str, int]:
        with session_scope(self._engine, write=False) as s:
            rows = s.exec(
                select(ReservationRow.tenant, func.sum(ReservationRow.gpus))
                .where(
                    col(ReservationRow.state).in_(
                        [ReservationState.PLANNED.value, ReservationState.ACTIVE.value]
                    )
                )
                .group_by(ReservationRow.tenant)
            ).all()
        return {tenant: int(total or 0) for tenant, total in rows}
