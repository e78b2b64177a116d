"""Small helpers to set up a hub through the API in tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def make_pool(op: TestClient, gpu_class: str = "H100-80GB", nodes: int = 2, gpus: int = 8) -> None:
    ok(op.post("/v1/gpu-classes", json={"name": gpu_class}), 201)
    for i in range(nodes):
        ok(
            op.post("/v1/nodes", json={"name": f"node-{i}", "gpu_class": gpu_class, "gpus": gpus}),
            201,
        )


def make_tenant(
    op: TestClient,
    name: str,
    *,
    gpu_class: str = "H100-80GB",
    guaranteed: int = 8,
    limit: int = 16,
    budget_gpu_hours: float | None = None,
) -> dict[str, str]:
    """Create a tenant with a quota and return auth headers for its new API key."""
    ok(op.post("/v1/tenants", json={"name": name}), 201)
    ok(
        op.put(
            f"/v1/tenants/{name}/quotas/{gpu_class}",
            json={"guaranteed": guaranteed, "limit": limit, "budget_gpu_hours": budget_gpu_hours},
        )
    )
    key = ok(op.post(f"/v1/tenants/{name}/api-keys", json={"name": "test"}), 201)
    return {"Authorization": f"Bearer {key['token']}"}


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("gpu_class", "H100-80GB")
    body.setdefault("duration", 3600)
    return ok(client.post("/v1/requests", json=body, headers=headers), 201)  # type: ignore[no-any-return]
