"""Several server processes on one PostgreSQL: exactly one runs cycles; when it is killed,
another takes over within 15 s; no acknowledged request is lost or planned twice."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from api.process import ServerProcess, wait_for
from scheduler.db import make_engine
from tests.invariants import plan_violations

pytestmark = pytest.mark.postgres
TOKEN = "replica-test-operator-token"
OP = {"Authorization": f"Bearer {TOKEN}"}


def status(server: ServerProcess) -> dict:
    return httpx.get(f"{server.url}/v1/scheduler", headers=OP, timeout=5).json()


def test_leader_failover(pg_url, tmp_path):
    env = {"GPUPOOL_CYCLE_INTERVAL_S": "2"}
    a = ServerProcess(pg_url, TOKEN, tmp_path / "a.log", **env)
    b = ServerProcess(pg_url, TOKEN, tmp_path / "b.log", **env)
    try:
        wait_for(lambda: status(a)["leader"] and status(a)["leader"] == status(b)["leader"])
        leaders = [s for s in (a, b) if status(s)["is_leader"]]
        assert len(leaders) == 1
        leader, follower = (a, b) if leaders[0] is a else (b, a)
        term = status(follower)["term"]

        base = follower.url
        httpx.post(
            f"{base}/v1/gpu-classes", json={"name": "H100-80GB"}, headers=OP
        ).raise_for_status()
        for i in range(4):
            body = {"name": f"n{i}", "gpu_class": "H100-80GB", "gpus": 8}
            httpx.post(f"{base}/v1/nodes", json=body, headers=OP).raise_for_status()
        httpx.post(f"{base}/v1/tenants", json={"name": "acme"}, headers=OP).raise_for_status()
        httpx.put(
            f"{base}/v1/tenants/acme/quotas/H100-80GB",
            json={"guaranteed": 16, "limit": 32},
            headers=OP,
        ).raise_for_status()
        key = httpx.post(f"{base}/v1/tenants/acme/api-keys", json={}, headers=OP).json()["token"]
        acme = {"Authorization": f"Bearer {key}"}

        acked: list[int] = []

        def submit(server: ServerProcess, n: int) -> None:
            for i in range(n):
                body = {"gpu_class": "H100-80GB", "gpus": 1 + i % 8, "duration": 3600 * (1 + i % 3)}
                r = httpx.post(f"{server.url}/v1/requests", json=body, headers=acme, timeout=10)
                assert r.status_code == 201, r.text
                acked.append(r.json()["id"])

        def all_planned() -> bool:
            page = httpx.get(
                f"{follower.url}/v1/requests", params={"limit": 500}, headers=OP
            ).json()
            states = {r["id"]: r["state"] for r in page["items"]}
            return all(states.get(i) in ("planned", "active") for i in acked)

        # Submitted to the follower: the leader plans them (signalled through the database).
        submit(follower, 10)
        submit(leader, 5)
        wait_for(all_planned, timeout=20)

        leader.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        submit(follower, 10)  # the API keeps answering on the survivor
        wait_for(lambda: status(follower)["is_leader"], timeout=20, interval=0.2)
        takeover_s = time.monotonic() - killed_at
        assert takeover_s <= 15, takeover_s
        assert status(follower)["term"] > term
        wait_for(all_planned, timeout=20)

        engine = make_engine(pg_url)
        try:
            assert plan_violations(engine) == []
            with engine.connect() as conn:
                stored = {r[0] for r in conn.exec_driver_sql("SELECT id FROM request").all()}
                live = conn.exec_driver_sql(
                    "SELECT request_id, count(*) FROM reservation "
                    "WHERE state IN ('planned', 'active') GROUP BY request_id"
                ).all()
        finally:
            engine.dispose()
        assert set(acked) <= stored and len(acked) == len(set(acked)) == 25
        assert {rid for rid, _ in live} == set(acked)
        assert all(n == 1 for _, n in live)
    finally:
        a.stop()
        b.stop()
