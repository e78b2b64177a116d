"""The server's dashboards (hub overview, tenant, scheduler health) load as Grafana JSON and
query only metrics and labels that the server's /metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import metrics
from tests.api.usage_helpers import agent
from tests.metrics.test_dashboard import GROUPING, MATCHER, SCRAPE_LABELS, SELECTOR, panels, queries
from tests.metrics.test_server_metrics import scenario, scrape

__all__ = ["agent", "scenario"]

DASHBOARDS = Path(metrics.__file__).parent / "dashboards"
SERVER_DASHBOARDS = ("hub-overview", "tenant", "scheduler-health")
METRIC = re.compile(r"\b(gpupool_[a-z_]+)\b")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return data


def targets(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


@pytest.mark.parametrize("name", SERVER_DASHBOARDS)
def test_the_dashboard_is_grafana_json(name: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == f"gpupool-{name}" and dashboard["title"].startswith("gpupool / ")
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["y"] + dy, pos["x"] + dx) for dy in range(pos["h"]) for dx in range(pos["w"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        assert panel["datasource"]["uid"] == "${datasource}"
    assert "datasource" in {v["name"] for v in dashboard["templating"]["list"]}


def test_the_tenant_dashboard_is_about_one_tenant() -> None:
    dashboard = load("tenant")
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "tenant"]
    assert variable["multi"] is False and variable["includeAll"] is False
    for expr in targets(dashboard):
        for selector in SELECTOR.findall(expr):
            assert 'tenant="$tenant"' in selector, expr


def test_every_query_uses_only_exported_metrics_and_labels(client: Any, scenario: Any) -> None:
    """Exported = what a scrape of the server returns after a scenario that exercises every
    family (state, usage, idle flags, cycles, admissions, preemptions)."""
    series, _ = scrape(client)
    names = {name for name, _ in series}
    labels = {k for _, ls in series for k, _ in ls}
    problems = []
    for name in SERVER_DASHBOARDS:
        for expr in queries(load(name)):
            used = set(METRIC.findall(expr))
            if not used:
                problems.append(f"{name}: no gpupool metric in {expr}")
            if used - names:
                problems.append(f"{name}: not exported {sorted(used - names)} in {expr}")
            used_labels = {m for sel in SELECTOR.findall(expr) for m in MATCHER.findall(sel)}
            used_labels |= {
                label.strip() for group in GROUPING.findall(expr) for label in group.split(",")
            }
            unknown = used_labels - labels - SCRAPE_LABELS - {""}
            if unknown:
                problems.append(f"{name}: labels not exported {sorted(unknown)} in {expr}")
    assert problems == []
