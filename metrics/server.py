"""The server's own Prometheus metrics (``gpupool_*``), served at ``/metrics``.

State that lives in the database is read by a custom collector at scrape time; the cycle's
own events are counters and histograms fed from each cycle's result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import func, select

from scheduler.tables import NodeRow, QuotaRow, RequestRow

if TYPE_CHECKING:
    from fastapi import FastAPI

    from api.deps import AppContext


class StateCollector(Collector):
    """Requests by state, quotas and capacity, read from the database at scrape time."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only: registering must not touch the database."""
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        requests, capacity, guaranteed, limit = self._families()
        with self._ctx.read() as s:
            for tenant, cls, state, n in s.exec(
                select(
                    RequestRow.tenant, RequestRow.gpu_class, RequestRow.state, func.count()
                ).group_by(RequestRow.tenant, RequestRow.gpu_class, RequestRow.state)
            ).all():
                requests.add_metric([tenant, cls, state], n)
            for cls, gpus in s.exec(
                select(NodeRow.gpu_class, func.sum(NodeRow.gpus)).group_by(NodeRow.gpu_class)
            ).all():
                capacity.add_metric([cls], gpus or 0)
            for q in s.exec(select(QuotaRow)).all():
                guaranteed.add_metric([q.tenant, q.gpu_class], q.guaranteed)
                limit.add_metric([q.tenant, q.gpu_class], q.limit)
        yield requests
        yield capacity
        yield guaranteed
        yield limit

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        requests = GaugeMetricFamily(
            "gpupool_requests",
            "Requests by state, tenant and GPU class.",
            labels=["tenant", "gpu_class", "state"],
        )
        capacity = GaugeMetricFamily(
            "gpupool_capacity_gpus", "Installed GPUs by class.", labels=["gpu_class"]
        )
        guaranteed = GaugeMetricFamily(
            "gpupool_quota_guaranteed_gpus",
            "Guaranteed quota by tenant and class.",
            labels=["tenant", "gpu_class"],
        )
        limit = GaugeMetricFamily(
            "gpupool_quota_limit_gpus",
            "Quota limit by tenant and class.",
            labels=["tenant", "gpu_class"],
        )
        return requests, capacity, guaranteed, limit


def mount_metrics(app: FastAPI, ctx: AppContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(ctx))
    app.mount("/metrics", make_asgi_app(registry=registry))
    ctx.extras["registry"] = registry
    return registry
