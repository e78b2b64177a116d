"""A short load run in the suite (the long one is `gpupool bench api`): tenants submit, poll
and cancel against a real server on loopback; no 5xx, nothing lost or duplicated, and, read
from the database afterwards, no node or tenant limit over-committed at any moment; with one
API process and with two (``serve --workers 2``, two writers on one SQLite file)."""

from __future__ import annotations

import asyncio

import pytest

from api.bench import TOKEN, check_database, set_up_hub, submit_rate
from api.loadtest import run_load
from api.process import ServerProcess


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-api-processes"])
def test_short_mixed_load(db_url, tmp_path, workers):
    env = {"GPUPOOL_API_WORKERS": str(workers)}
    with ServerProcess(db_url, TOKEN, tmp_path / "server.log", **env) as server:
        keys = set_up_hub(server.url, gpus=128, tenants=20)
        result = asyncio.run(run_load(server.url, keys, seconds=8, seed=7))
    summary = result.summary()
    checked = check_database(db_url, result)
    print(summary)
    assert result.server_errors == 0 and result.unanswered == 0 and result.errors == []
    assert summary["submit"]["count"] > 50 and summary["poll"]["count"] > 20
    assert summary["cancel"]["count"] > 5
    assert checked == {"lost": 0, "duplicated": 0, "overcommitted": []}


def test_open_loop_leaves_the_warm_up_out_of_the_figures(tmp_path):
    """The open-loop phase of the benchmark: submits due at a fixed rate; those of the
    warm-up are stored and checked but not timed."""
    db_url = f"sqlite:///{tmp_path / 'rate.db'}"
    with ServerProcess(db_url, TOKEN, tmp_path / "server.log", GPUPOOL_API_WORKERS="2") as server:
        keys = set_up_hub(server.url, gpus=16, tenants=4)
        result = asyncio.run(submit_rate(server.url, keys, rate=40, seconds=2, warmup_s=1))
    assert result.errors == [] and result.server_errors == 0 and result.unanswered == 0
    assert result.ops["submit"].codes == {201: 80}  # the 2 measured seconds only
    assert len(result.acknowledged) == 120  # warm-up included
    assert result.duration_s >= 2 - 0.05
    assert check_database(db_url, result) == {"lost": 0, "duplicated": 0, "overcommitted": []}
