"""Schemathesis against the OpenAPI schema: every operation, with operator and with tenant
credentials. No 5xx; status codes, content types and bodies as documented."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from scheduler import migrate
from scheduler.clock import ManualClock
from scheduler.db import make_engine
from scheduler.settings import Settings
from tests.conftest import OPERATOR_TOKEN, START

#: Fixed examples by default, so that CI is repeatable; GPUPOOL_FUZZ_RANDOM=1 explores anew
#: (with GPUPOOL_FUZZ_EXAMPLES raising the count) when hunting for new failures.
DERANDOMIZE = os.environ.get("GPUPOOL_FUZZ_RANDOM", "") != "1"
SCALE = int(os.environ.get("GPUPOOL_FUZZ_EXAMPLES", "1"))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# The app is built at import (schemathesis parametrizes from its schema at collection); its
# database is created and seeded by the module fixture below, before any test runs.
_DIR = Path(tempfile.mkdtemp(prefix="gpupool-fuzz-"))
_URL = f"sqlite:///{_DIR / 'fuzz.db'}"
_ENGINE = make_engine(_URL)
APP = create_app(
    Settings(database_url=_URL, operator_token=OPERATOR_TOKEN, rate_limit_per_s=0),  # type: ignore[arg-type]
    engine=_ENGINE,
    clock=ManualClock(START),
    run_cycles=False,
    upgrade_db=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def seeded() -> Iterator[str]:
    """A migrated database with a small hub, so that some generated ids and names exist."""
    from fastapi.testclient import TestClient

    migrate.upgrade(_ENGINE)
    with TestClient(APP) as c:
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        c.post("/v1/gpu-classes", json={"name": "H100-80GB"}, headers=op)
        c.post("/v1/nodes", json={"name": "n1", "gpu_class": "H100-80GB", "gpus": 8}, headers=op)
        c.post("/v1/tenants", json={"name": "acme"}, headers=op)
        c.put("/v1/tenants/acme/quotas/H100-80GB", json={"guaranteed": 8, "limit": 8}, headers=op)
        key = c.post("/v1/tenants/acme/api-keys", json={}, headers=op).json()["token"]
        body = {"gpu_class": "H100-80GB", "gpus": 1, "duration": 60}
        c.post("/v1/requests", json=body, headers={"Authorization": f"Bearer {key}"})
    yield key
    _ENGINE.dispose()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=12 * SCALE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=DERANDOMIZE,
)
def test_as_operator(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}, checks=CHECKS)


@schema.parametrize()
@settings(
    max_examples=8 * SCALE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=DERANDOMIZE,
)
def test_as_tenant(case: Any, seeded: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {seeded}"}, checks=CHECKS)
