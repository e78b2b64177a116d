"""Requests and reservations survive a restart of a real server process on the file database."""

from __future__ import annotations

import httpx

from api.process import ServerProcess, wait_for

TOKEN = "restart-test-operator-token"


def test_state_survives_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/gpupool.db"
    op = {"Authorization": f"Bearer {TOKEN}"}
    with ServerProcess(url, TOKEN, tmp_path / "server.log") as server:
        base = server.url
        httpx.post(
            f"{base}/v1/gpu-classes", json={"name": "H100-80GB"}, headers=op
        ).raise_for_status()
        for i in range(2):
            httpx.post(
                f"{base}/v1/nodes",
                json={"name": f"n{i}", "gpu_class": "H100-80GB", "gpus": 8},
                headers=op,
            ).raise_for_status()
        httpx.post(f"{base}/v1/tenants", json={"name": "acme"}, headers=op).raise_for_status()
        httpx.put(
            f"{base}/v1/tenants/acme/quotas/H100-80GB",
            json={"guaranteed": 16, "limit": 16},
            headers=op,
        ).raise_for_status()
        key = httpx.post(f"{base}/v1/tenants/acme/api-keys", json={}, headers=op).json()["token"]
        acme = {"Authorization": f"Bearer {key}"}
        running = httpx.post(
            f"{base}/v1/requests",
            json={"gpu_class": "H100-80GB", "gpus": 16, "duration": 3600, "gpus_per_node": 8},
            headers=acme,
        ).json()
        queued = httpx.post(
            f"{base}/v1/requests",
            json={"gpu_class": "H100-80GB", "gpus": 8, "duration": 600},
            headers=acme,
        ).json()

        def settled() -> dict | None:
            a = httpx.get(f"{base}/v1/requests/{running['id']}", headers=acme).json()
            b = httpx.get(f"{base}/v1/requests/{queued['id']}", headers=acme).json()
            return (a, b) if a["state"] == "active" and b["state"] == "planned" else None

        before_a, before_b = wait_for(settled)

    assert server.proc.returncode is not None

    with ServerProcess(url, TOKEN, tmp_path / "server.log") as server:
        base = server.url
        after_a = httpx.get(f"{base}/v1/requests/{running['id']}", headers=acme).json()
        after_b = httpx.get(f"{base}/v1/requests/{queued['id']}", headers=acme).json()
        assert after_a["state"] == "active"
        assert after_a["reservation"] == before_a["reservation"]
        assert after_b["state"] == "planned"
        assert after_b["planned_start"] == before_b["planned_start"]
        # The key still works and new ids do not collide with old ones.
        third = httpx.post(
            f"{base}/v1/requests",
            json={"gpu_class": "H100-80GB", "gpus": 1, "duration": 60},
            headers=acme,
        ).json()
        assert third["id"] > queued["id"]
