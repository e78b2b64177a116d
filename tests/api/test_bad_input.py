"""Every bad input of issue 2 gets problem+json naming the field and the reason, and changes
nothing in the database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from tests.api.helpers import make_pool, make_tenant, ok, submit


def dump(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused call wrote nothing."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = conn.execute(text(f'SELECT * FROM "{table.name}"')).all()
            out[table.name] = sorted(tuple(map(str, r)) for r in rows)
    return out


@pytest.fixture
def hub(op):
    make_pool(op, nodes=2, gpus=8)
    headers = make_tenant(op, "acme", guaranteed=8, limit=16)
    submit(op, headers, gpus=8)
    return headers


def assert_problem(response: Any, status: int, field: str | None, *, contains: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:gpupool:problem:")
    assert body["title"] and body["detail"]
    if field is not None:
        fields = [e["field"] for e in body["errors"]]
        assert field in fields, body
        reasons = " ".join(e["reason"] for e in body["errors"] if e["field"] == field)
        assert contains in reasons, body


REQUEST_CASES = [
    ("zero gpus", {"gpus": 0}, "gpus", "greater than 0"),
    ("negative gpus", {"gpus": -8}, "gpus", "greater than 0"),
    ("unknown class", {"gpu_class": "TPU-v9"}, "gpu_class", "unknown GPU class"),
    ("per node too big", {"gpus": 16, "gpus_per_node": 16}, "gpus_per_node", "more than any"),
    ("not a multiple", {"gpus": 12, "gpus_per_node": 8}, "gpus", "not a multiple"),
    ("zero duration", {"duration": 0}, "duration", "must be positive"),
    ("negative duration", {"duration": "-PT1H"}, "duration", "must be positive"),
    ("duration too long", {"duration": "P30D"}, "duration", "at most"),
    ("duration not a duration", {"duration": "soon"}, "duration", ""),
    (
        "deadline too early",
        {"not_before": "2026-11-24T09:00:00Z", "deadline": "2026-11-24T09:30:00Z"},
        "deadline",
        "earlier than not_before + duration",
    ),
    ("deadline before now", {"deadline": "2026-11-23T09:10:00Z"}, "deadline", "now + duration"),
    ("naive datetime", {"not_before": "2026-11-24T09:00:00"}, "not_before", "timezone"),
    ("unknown field", {"gpu_count": 4}, "gpu_count", "not a known field"),
    ("missing gpus", {"gpus": None}, "gpus", ""),
]


@pytest.mark.parametrize(
    ("case", "change", "field", "reason"), REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES]
)
def test_bad_request_body(op, engine, hub, case, change, field, reason):
    body: dict[str, Any] = {"gpu_class": "H100-80GB", "gpus": 8, "duration": 3600}
    body.update(change)
    if body.get("gpus") is None:
        del body["gpus"]
    before = dump(engine)
    r = op.post("/v1/requests", json=body, headers=hub)
    assert_problem(r, 422, field, contains=reason)
    assert dump(engine) == before


def test_malformed_json(op, engine, hub):
    before = dump(engine)
    r = op.post(
        "/v1/requests",
        content=b'{"gpu_class": "H100-80GB", "gpus": 8,',
        headers={**hub, "content-type": "application/json"},
    )
    assert_problem(r, 400, None)
    assert r.json()["code"] == "malformed_json"
    assert dump(engine) == before


def test_body_not_an_object(op, engine, hub):
    before = dump(engine)
    r = op.post("/v1/requests", json=[1, 2], headers=hub)
    assert_problem(r, 422, "body")
    assert dump(engine) == before


def test_quota_limit_below_guaranteed(op, engine, hub):
    before = dump(engine)
    r = op.put("/v1/tenants/acme/quotas/H100-80GB", json={"guaranteed": 8, "limit": 4})
    assert_problem(r, 422, "limit", contains="at least guaranteed")
    assert dump(engine) == before


def test_guaranteed_over_capacity_refused(op, engine, hub):
    ok(op.post("/v1/tenants", json={"name": "other"}), 201)
    ok(op.put("/v1/tenants/other/quotas/H100-80GB", json={"guaranteed": 8, "limit": 8}))
    before = dump(engine)
    # 8 (acme) + 8 (other) already promise the whole 16-GPU pool.
    r = op.put("/v1/tenants/other/quotas/H100-80GB", json={"guaranteed": 9, "limit": 9})
    assert_problem(r, 422, "guaranteed", contains="would total 17 GPUs but the pool has 16")
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tenants", {"name": "acme"}),
        ("/v1/gpu-classes", {"name": "H100-80GB"}),
        ("/v1/nodes", {"name": "node-0", "gpu_class": "H100-80GB", "gpus": 8}),
    ],
)
def test_duplicate_names_conflict(op, engine, hub, path, body):
    before = dump(engine)
    r = op.post(path, json=body)
    assert_problem(r, 409, None)
    assert r.json()["code"] == "already_exists"
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tenants", {"name": "Acme Corp"}, "name"),
        ("/v1/tenants", {"name": "ok", "weight": 0}, "weight"),
        ("/v1/tenants", {"name": "ok", "colour": "red"}, "colour"),
        ("/v1/nodes", {"name": "n9", "gpu_class": "H100-80GB", "gpus": 0}, "gpus"),
        ("/v1/nodes", {"name": "n9", "gpu_class": "nope", "gpus": 8}, "gpu_class"),
        ("/v1/gpu-classes", {"name": "bad name!"}, "name"),
    ],
)
def test_bad_operator_input(op, engine, hub, path, body, field):
    before = dump(engine)
    assert_problem(op.post(path, json=body), 422, field)
    assert dump(engine) == before


def test_bad_pagination(op, hub):
    assert_problem(op.get("/v1/requests", params={"limit": 0}), 422, "limit")
    assert_problem(op.get("/v1/requests", params={"cursor": "%%%"}), 422, "cursor")
    assert_problem(op.get("/v1/tenants", params={"limit": 100000}), 422, "limit")
