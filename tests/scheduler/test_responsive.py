"""The solve runs off the API's event loop: while a long cycle runs, the API keeps answering."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import httpx

from api.bench import TOKEN
from api.process import ServerProcess, wait_for
from scheduler import migrate
from scheduler.clock import SystemClock
from scheduler.db import make_engine, session_scope
from scheduler.domain import OPERATOR, Principal, Role
from scheduler.services import gpu_classes, nodes, quotas, tenants
from scheduler.services import submit as submit_service
from scheduler.settings import Settings


def seed(url: str, requests: int) -> None:
    """A 512-GPU pool and a deep queue, written straight to the database (fast)."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    now = SystemClock().now()
    rng = random.Random(5)
    with session_scope(engine) as s:
        gpu_classes.create(s, OPERATOR, now, name="H100-80GB")
        for i in range(64):
            nodes.create(s, OPERATOR, now, name=f"n{i:02d}", gpu_class="H100-80GB", gpus=8)
        for t in range(8):
            tenants.create(s, OPERATOR, now, name=f"t{t}")
            quotas.set_quota(s, OPERATOR, now, f"t{t}", "H100-80GB", guaranteed=64, limit=512)
        for _ in range(requests):
            gpus = rng.choice([1, 2, 4, 8, 16, 32])
            ask = submit_service.NewRequest(
                "H100-80GB",
                gpus,
                timedelta(seconds=rng.choice([1800, 3600, 4 * 3600, 24 * 3600])),
                gpus_per_node=8 if gpus > 8 else None,
            )
            who = Principal(Role.TENANT, tenant=f"t{rng.randrange(8)}", key_id=1)
            submit_service.submit(s, who, now, Settings(), ask)
    engine.dispose()


def test_api_answers_during_a_long_cycle(tmp_path):
    url = f"sqlite:///{tmp_path}/db.db"
    seed(url, 3000)
    env = {"GPUPOOL_SOLVER_TIME_LIMIT_S": "8"}
    op = {"Authorization": f"Bearer {TOKEN}"}
    with (
        ServerProcess(url, TOKEN, tmp_path / "server.log", **env) as s,
        httpx.Client(base_url=s.url, headers=op, timeout=30) as c,
    ):
        wait_for(
            lambda: c.get("/v1/scheduler").json()["cycle_running_since"], timeout=30, interval=0.05
        )
        latencies = []
        while c.get("/v1/scheduler").json()["cycle_running_since"] and len(latencies) < 40:
            t0 = time.monotonic()
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/requests", params={"limit": 5}).status_code == 200
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
    assert len(latencies) >= 10, "the cycle was too short to observe"
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.25, latencies
    assert latencies[-1] < 2.0, latencies
