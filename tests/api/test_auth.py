"""Bearer auth: operator token, tenant keys (hashed, revocable), roles, and start-up refusal."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from sqlmodel import Session, select

from api.app import ConfigError, create_app
from scheduler.settings import Settings
from scheduler.tables import ApiKeyRow, AuditRow
from tests.api.helpers import make_pool, make_tenant, ok, submit


def test_missing_and_malformed_credentials(client):
    r = client.get("/v1/requests")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["code"] == "unauthorized"
    assert client.get("/v1/requests", headers={"Authorization": "Basic abc"}).status_code == 401
    assert (
        client.get("/v1/requests", headers={"Authorization": "Bearer gpk_nope_x"}).status_code
        == 401
    )
    assert client.get("/v1/requests", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_tenant_key_cannot_use_operator_endpoints(op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    for method, path in [
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/nodes"),
        ("POST", "/v1/nodes/node-0/drain"),
        ("PUT", "/v1/tenants/acme/quotas/H100-80GB"),
        ("GET", "/v1/plan"),
        ("GET", "/v1/audit-log"),
        ("POST", "/v1/tenants/acme/api-keys"),
    ]:
        r = op.request(method, path, headers=acme, json={})
        assert r.status_code == 403, (method, path, r.text)


def test_keys_are_stored_hashed_and_shown_once(op, engine):
    make_pool(op)
    ok(op.post("/v1/tenants", json={"name": "acme"}), 201)
    issued = ok(op.post("/v1/tenants/acme/api-keys", json={"name": "ci"}), 201)
    token = issued["token"]
    listed = ok(op.get("/v1/tenants/acme/api-keys"))["items"]
    assert listed and all("token" not in k for k in listed)
    with Session(engine) as s:
        row = s.exec(select(ApiKeyRow)).one()
        assert row.secret_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in row.secret_hash
        audit = s.exec(select(AuditRow)).all()
        assert all(token not in str(a.after) for a in audit)


def test_revoked_key_rejected_at_once(op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    assert op.get("/v1/requests", headers=acme).status_code == 200
    key_id = ok(op.get("/v1/tenants/acme/api-keys"))["items"][0]["id"]
    ok(op.delete(f"/v1/tenants/acme/api-keys/{key_id}"))
    r = op.get("/v1/requests", headers=acme)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_deactivated_tenant_loses_access_and_waiting_requests(op, cycle):
    make_pool(op, nodes=1)
    acme = make_tenant(op, "acme", guaranteed=8, limit=8)
    running = submit(op, acme, gpus=8)
    waiting = submit(op, acme, gpus=8)
    cycle()
    ok(op.post("/v1/tenants/acme/deactivate"))
    assert op.get("/v1/requests", headers=acme).status_code == 403
    assert ok(op.get(f"/v1/requests/{waiting['id']}"))["state"] == "cancelled"
    assert ok(op.get(f"/v1/requests/{running['id']}"))["state"] == "active"


def test_operator_submits_on_behalf_and_tenant_cannot_impersonate(op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    make_tenant(op, "rival")
    r = op.post("/v1/requests", json={"gpu_class": "H100-80GB", "gpus": 1, "duration": 60})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "tenant"
    made = submit(op, {}, gpus=1, tenant="rival")
    assert made["tenant"] == "rival"
    r = op.post(
        "/v1/requests",
        json={"gpu_class": "H100-80GB", "gpus": 1, "duration": 60, "tenant": "rival"},
        headers=acme,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "tenant"


@pytest.mark.parametrize("token", ["", "changeme", "short"])
def test_server_refuses_weak_operator_token(token):
    with pytest.raises(ConfigError, match="GPUPOOL_OPERATOR_TOKEN"):
        create_app(Settings(operator_token=token, database_url="sqlite://"))  # type: ignore[arg-type]
    create_app(Settings(operator_token=token, dev_mode=True, database_url="sqlite://"))  # type: ignore[arg-type]


def test_serve_command_refuses_weak_token_with_one_line(tmp_path):
    env = {
        "GPUPOOL_OPERATOR_TOKEN": "",
        "GPUPOOL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "PATH": "",
    }
    r = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpupool: error: GPUPOOL_OPERATOR_TOKEN")
