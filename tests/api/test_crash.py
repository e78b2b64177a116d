"""SIGKILL the server while it plans under load, restart it: nothing acknowledged is lost,
nothing is double-booked, and the next plan is valid. Once with cycles in the one server
process, once with two API processes and the scheduler child (``serve --workers 2``)."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time

import httpx
import pytest

from api.bench import TOKEN, overcommitted, set_up_hub
from api.loadtest import run_load
from api.process import ServerProcess, wait_for
from scheduler.db import make_engine
from tests.invariants import plan_violations


def _cycles(url: str) -> list[tuple[int, int, str | None]]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return [
                tuple(r)
                for r in c.exec_driver_sql(
                    "SELECT id, violations, error FROM cycle_run ORDER BY id"
                ).all()
            ]
    finally:
        engine.dispose()


def _load(url: str, keys: dict[str, str], seed: int, holder: dict[str, object]) -> None:
    holder["result"] = asyncio.run(run_load(url, keys, seconds=6, seed=seed))


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-api-processes"])
def test_kill_mid_cycle_under_load_and_restart(db_url, tmp_path, workers):
    rng = random.Random(3)
    env = {
        "GPUPOOL_API_WORKERS": str(workers),
        "GPUPOOL_CYCLE_MIN_GAP_S": "0",
        "GPUPOOL_CYCLE_DEBOUNCE_S": "0.05",
        "GPUPOOL_SOLVER_TIME_LIMIT_S": "0.5",
        "GPUPOOL_LEASE_TTL_S": "3",  # the killed leader's lease expires soon
    }
    acknowledged: dict[int, str] = {}
    keys: dict[str, str] = {}
    for round_ in range(2):
        with ServerProcess(db_url, TOKEN, tmp_path / f"server{round_}.log", **env) as server:
            if not keys:
                keys = set_up_hub(server.url, gpus=64, tenants=8)
            target = len(_cycles(db_url)) + 2
            holder: dict[str, object] = {}
            t = threading.Thread(target=_load, args=(server.url, keys, round_, holder))
            t.start()
            # kill while cycles are running back to back under the load
            wait_for(lambda n=target: len(_cycles(db_url)) >= n, timeout=30, interval=0.05)
            time.sleep(rng.uniform(0.5, 2.5))
            server.stop(signal.SIGKILL)
            t.join(60)
            result = holder["result"]
            acknowledged.update(result.acknowledged)  # type: ignore[attr-defined]

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = dict(conn.exec_driver_sql("SELECT id, tenant FROM request").all())
            assert overcommitted(conn) == []
        assert plan_violations(engine) == []
    finally:
        engine.dispose()
    assert acknowledged and all(stored.get(rid) == tenant for rid, tenant in acknowledged.items())

    # a restarted server plans again, with a valid plan
    with ServerProcess(db_url, TOKEN, tmp_path / "server-final.log", **env) as server:
        count = len(_cycles(db_url))
        wait_for(lambda: len(_cycles(db_url)) > count, timeout=60)
        last = _cycles(db_url)[-1]
        assert last[1] == 0 and last[2] is None
        r = httpx.get(
            f"{server.url}/v1/requests",
            params={"limit": 5},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200
    engine = make_engine(db_url)
    try:
        assert plan_violations(engine) == []
    finally:
        engine.dispose()
