"""Tenant isolation on every endpoint, roles, body size limit, per-key rate limit, and no
secrets in logs."""

from __future__ import annotations

import re

import httpx
import pytest

from api.app import create_app
from api.process import ServerProcess, wait_for
from tests.api.helpers import make_pool, make_tenant, ok, submit
from tests.conftest import OPERATOR_TOKEN

#: What a tenant key may call; every other /v1 operation is for the operator (or agents).
TENANT_OPERATIONS = {
    ("POST", "/v1/requests"),
    ("GET", "/v1/requests"),
    ("GET", "/v1/requests/{request_id}"),
    ("GET", "/v1/requests/{request_id}/events"),
    ("GET", "/v1/requests/{request_id}/explain"),
    ("POST", "/v1/requests/{request_id}/cancel"),
    ("POST", "/v1/requests/{request_id}/complete"),
    ("POST", "/v1/requests/{request_id}/extend"),
    ("GET", "/v1/gpu-classes"),
    ("GET", "/v1/gpu-classes/{name}"),
    ("GET", "/v1/quotas"),
    ("GET", "/v1/usage"),
}


def operations(app) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in item
    )


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "id" in m.group(0) else "x", path)


def test_tenant_keys_are_refused_everywhere_else(app, op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    checked = 0
    for method, path in operations(app):
        if (method, path) in TENANT_OPERATIONS:
            continue
        r = op.request(method, concrete(path), headers=acme, json={})
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        checked += 1
    assert checked >= 20


def test_every_request_endpoint_hides_other_tenants_requests(op, cycle):
    make_pool(op)
    acme = make_tenant(op, "acme")
    rival = make_tenant(op, "rival")
    mine = submit(op, acme, gpus=8, duration=3600)["id"]
    cycle()
    before = ok(op.get(f"/v1/requests/{mine}"))
    for method, path, body in [
        ("GET", f"/v1/requests/{mine}", None),
        ("GET", f"/v1/requests/{mine}/events", None),
        ("GET", f"/v1/requests/{mine}/explain", None),
        ("POST", f"/v1/requests/{mine}/cancel", None),
        ("POST", f"/v1/requests/{mine}/complete", {}),
        ("POST", f"/v1/requests/{mine}/extend", {"duration": 60}),
    ]:
        r = op.request(method, path, headers=rival, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert str(mine) in r.json()["detail"]  # same answer as for an id that never existed
        missing = op.request(method, path.replace(str(mine), "999999"), headers=rival, json=body)
        assert missing.status_code == 404
    assert ok(op.get(f"/v1/requests/{mine}")) == before  # nothing changed
    assert ok(op.get("/v1/requests", headers=rival))["items"] == []
    usage = op.get("/v1/usage", headers=rival, params={"group_by": "reservation"})
    assert usage.status_code == 200
    assert all(row.get("tenant") in (None, "rival") for row in usage.json()["rows"])
    assert op.get("/v1/usage", headers=rival, params={"tenant": "acme"}).status_code == 422


def test_body_size_limit(engine, clock, settings):
    small = settings.model_copy(update={"max_body_bytes": 2048})
    from fastapi.testclient import TestClient

    app = create_app(small, engine=engine, clock=clock, run_cycles=False, upgrade_db=False)
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        big = {"name": "acme", "display_name": "x" * 4000}
        r = c.post("/v1/tenants", json=big)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "too_large"

        def chunks():  # no Content-Length: the limit applies while the body streams in
            yield b'{"name": "acme", "display_name": "'
            for _ in range(10):
                yield b"y" * 400
            yield b'"}'

        r = c.post("/v1/tenants", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/tenants").json()["items"] == []  # nothing stored
        assert c.post("/v1/tenants", json={"name": "acme"}).status_code == 201


def test_rate_limit_answers_429_with_retry_after(engine, clock, settings):
    limited = settings.model_copy(update={"rate_limit_per_s": 2.0, "rate_limit_burst": 5.0})
    from fastapi.testclient import TestClient

    app = create_app(limited, engine=engine, clock=clock, run_cycles=False, upgrade_db=False)
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        make_pool(c)
        acme = make_tenant(c, "acme")
        rival = make_tenant(c, "rival")
        codes = [c.get("/v1/requests", headers=acme).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        r = c.get("/v1/requests", headers=acme)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "rate_limited"
        # per key: another tenant is not slowed down, nor is the operator
        assert c.get("/v1/requests", headers=rival).status_code == 200
        assert all(c.get("/v1/tenants").status_code == 200 for _ in range(10))


def test_no_secrets_in_logs(tmp_path):
    token = "log-test-operator-token-SECRET"
    log = tmp_path / "server.log"
    with ServerProcess(f"sqlite:///{tmp_path}/db.db", token, log, GPUPOOL_LOG_LEVEL="debug") as s:
        op = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{s.url}/v1/gpu-classes", json={"name": "H100-80GB"}, headers=op)
        httpx.post(
            f"{s.url}/v1/nodes",
            json={"name": "n0", "gpu_class": "H100-80GB", "gpus": 8},
            headers=op,
        )
        httpx.post(f"{s.url}/v1/tenants", json={"name": "acme"}, headers=op)
        httpx.put(
            f"{s.url}/v1/tenants/acme/quotas/H100-80GB",
            json={"guaranteed": 8, "limit": 8},
            headers=op,
        )
        key = httpx.post(f"{s.url}/v1/tenants/acme/api-keys", json={}, headers=op).json()["token"]
        tenant = {"Authorization": f"Bearer {key}"}
        rid = httpx.post(
            f"{s.url}/v1/requests",
            json={"gpu_class": "H100-80GB", "gpus": 1, "duration": 60},
            headers=tenant,
        ).json()["id"]
        wait_for(
            lambda: (
                httpx.get(f"{s.url}/v1/requests/{rid}", headers=tenant).json()["state"] == "active"
            )
        )
        httpx.get(f"{s.url}/v1/requests", headers={"Authorization": "Bearer gpk_wrong_guess"})
        httpx.get(f"{s.url}/v1/requests", headers={"Authorization": f"Bearer {key}x"})
        httpx.get(f"{s.url}/v1/audit-log", headers=op)
    text = log.read_text()
    assert "cycle:" in text  # the log did capture the server's activity
    secret_part = key.split("_", 2)[2]
    for secret in (token, key, secret_part, "gpk_wrong_guess"):
        assert secret not in text


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Token abc", "bearer"])
def test_malformed_authorization_headers(client, header):
    r = client.get("/v1/requests", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
