"""The GPU nodes dashboard loads as Grafana JSON and queries only what the agent exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import metrics
from metrics.agent.collector import AgentCollector, AgentStatus
from tests.metrics.fakes import example_snapshot

DASHBOARD = Path(metrics.__file__).parent / "dashboards" / "gpu-nodes.json"
METRIC = re.compile(r"\b(DCGM_FI_[A-Z_]+|gpupool_agent_[a-z_]+)\b")
SELECTOR = re.compile(r"\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
# Labels Prometheus itself attaches to every scraped series.
SCRAPE_LABELS = {"instance", "job"}


def exported() -> tuple[set[str], set[str]]:
    """Every series name and label name the agent's /metrics can contain."""
    status = AgentStatus(
        snapshot=example_snapshot(),
        samples_buffered=1,
        dropped_buffer_full=1,
        dropped_rejected=1,
        pushed=1,
        push_failures=1,
        last_push_success=1.0,
        last_sample=1.0,
        pod_lookup_failures=1,
    )
    registry = CollectorRegistry()
    registry.register(AgentCollector("node", lambda: status))
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = load()
    assert dashboard["uid"] == "gpupool-gpu-nodes" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard["panels"]):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        assert panel["datasource"]["uid"] == "${datasource}"
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "Hostname"} <= names


@pytest.mark.parametrize("expr", queries(load()))
def test_every_query_uses_only_exported_metrics_and_labels(expr: str) -> None:
    names, labels = exported()
    used = set(METRIC.findall(expr))
    assert used, f"query uses no agent metric: {expr}"
    assert used <= names, f"not exported: {used - names}"
    used_labels = {m for sel in SELECTOR.findall(expr) for m in MATCHER.findall(sel)}
    used_labels |= {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    unknown = used_labels - labels - SCRAPE_LABELS - {""}
    assert not unknown, f"labels the agent does not export: {unknown}"
