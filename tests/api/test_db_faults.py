"""Database unreachable: /readyz fails, the API answers 503 problem+json, and the server
recovers by itself (API and cycle) when the database returns."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from api.process import ServerProcess, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres
TOKEN = "fault-test-operator-token-123"
OP = {"Authorization": f"Bearer {TOKEN}"}


def test_database_outage_and_recovery(pg_url, tmp_path):
    real = make_url(pg_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {"GPUPOOL_CYCLE_INTERVAL_S": "1", "GPUPOOL_LEASE_TTL_S": "4"}
    try:
        with (
            ServerProcess(via_proxy, TOKEN, tmp_path / "server.log", **env) as s,
            httpx.Client(base_url=s.url, headers=OP, timeout=15) as c,
        ):
            c.post("/v1/gpu-classes", json={"name": "H100-80GB"}).raise_for_status()
            c.post(
                "/v1/nodes", json={"name": "n0", "gpu_class": "H100-80GB", "gpus": 8}
            ).raise_for_status()
            c.post("/v1/tenants", json={"name": "acme"}).raise_for_status()
            c.put(
                "/v1/tenants/acme/quotas/H100-80GB", json={"guaranteed": 8, "limit": 8}
            ).raise_for_status()

            proxy.cut()
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/problem+json"
            r = c.post("/v1/tenants", json={"name": "during"})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "unavailable" and "retry-after" in r.headers
            assert c.get("/healthz").status_code == 200  # the process itself is fine
            time.sleep(3)  # the cycle and the lease heartbeat fail meanwhile, and back off

            proxy.restore()
            wait_for(lambda: c.get("/readyz").status_code == 200, timeout=30)
            key = c.post("/v1/tenants/acme/api-keys", json={}).json()["token"]
            rid = httpx.post(
                f"{s.url}/v1/requests",
                json={"gpu_class": "H100-80GB", "gpus": 8, "duration": 600},
                headers={"Authorization": f"Bearer {key}"},
            ).json()["id"]
            # the cycle picks up again by itself
            wait_for(lambda: c.get(f"/v1/requests/{rid}").json()["state"] == "active", timeout=40)
            assert c.get("/v1/tenants").json()["items"][0]["name"] == "acme"
        log = (tmp_path / "server.log").read_text()
        assert "cycle failed" in log or "lease renewal failed" in log
    finally:
        proxy.close()
