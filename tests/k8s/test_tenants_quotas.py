"""Tenant namespaces and per-namespace GPU ResourceQuotas, on both adapters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k8s.apisim.errors import ApiError
from k8s.port import RequestState
from tests.k8s.conftest import World, close_world, make_world
from tests.k8s.helpers import pod


@pytest.fixture(params=["simulated", "kube"])
def quota_world(request: pytest.FixtureRequest) -> Iterator[World]:
    w = make_world(
        request.param,
        manage_quotas=True,
        create_namespaces=True,
        namespace_template="tenant-{tenant}",
    )
    yield w
    close_world(w)


def test_namespaces_are_created_for_active_tenants(quota_world: World) -> None:
    quota_world.port.put_tenant("gamma")
    quota_world.port.put_tenant("sleepy", active=False)
    report = quota_world.reconcile()
    assert report.namespaces_created == 1
    created = quota_world.store.get("namespaces", "", "tenant-gamma")
    assert created["metadata"]["labels"]["gpupool.io/tenant"] == "gamma"
    assert quota_world.reconcile().namespaces_created == 0  # acme and beta have theirs


def test_quota_allows_planned_and_active_gpus(quota_world: World) -> None:
    world = quota_world
    world.request(1, allocation={"n0": 4})
    world.request(2, state=RequestState.PLANNED, allocation={"n1": 2})
    report = world.reconcile()
    assert report.quotas_written >= 2
    quota = world.store.get("resourcequotas", "acme", "gpupool-gpus")
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "6"}
    assert world.store.get("resourcequotas", "beta", "gpupool-gpus")["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "0"
    }
    # Gated pods of the planned request count at creation, and fit.
    for i in range(3):
        world.store.create("pods", "acme", pod(f"p{i}", 1 if i < 2 else 2, gpus=2))
    with pytest.raises(ApiError) as err:
        world.store.create("pods", "acme", pod("over", 2, gpus=2))
    assert err.value.code == 403
    assert world.reconcile().quotas_written == 0  # unchanged: no write
    world.port.set_state(2, RequestState.CANCELLED)
    world.reconcile()
    quota = world.store.get("resourcequotas", "acme", "gpupool-gpus")
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4"}
