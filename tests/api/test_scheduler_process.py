"""``gpupool serve --scheduler-process``: cycles and the controller run in a child process.

The API still plans (through the child), reports the child's leadership and stops it on
shutdown; a child whose server dies stops on its own, so it never keeps the lease."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from api.bench import OP, set_up_hub
from api.process import ServerProcess, wait_for


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    if not os.path.exists(path):
        pytest.skip("needs /proc children lists (Linux)")
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_cycles_run_in_the_child_and_stop_with_the_server(db_url, tmp_path):
    env = {
        "GPUPOOL_SCHEDULER_PROCESS": "true",
        "GPUPOOL_LEASE_TTL_S": "3",
        "GPUPOOL_SCHEDULER_NICE": "7",
    }
    with ServerProcess(db_url, OP["Authorization"][7:], tmp_path / "server.log", **env) as server:
        children = _children(server.proc.pid)
        assert len(children) >= 1, "serve --scheduler-process starts a scheduler child"
        # requests go first: the child runs 7 nice steps below the API process
        api_nice = os.getpriority(os.PRIO_PROCESS, server.proc.pid)
        wait_for(
            lambda: any(os.getpriority(os.PRIO_PROCESS, c) == api_nice + 7 for c in children),
            timeout=30,
        )
        keys = set_up_hub(server.url, gpus=16, tenants=2)
        auth = {"Authorization": f"Bearer {keys['tenant-00']}"}
        body = {"gpu_class": "H100-80GB", "gpus": 8, "duration": 3600}
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/v1/requests", json=body, headers=auth)
            assert r.status_code == 201, r.text
            rid = r.json()["id"]

            def started() -> bool:
                return c.get(f"/v1/requests/{rid}", headers=auth).json()["state"] == "active"

            wait_for(started, timeout=30)
            status = c.get("/v1/scheduler", headers=OP).json()
            # this replica leads through its child, and the API process itself runs no cycles
            assert status["is_leader"] and status["leader"] == status["replica"], status
            assert status["cycles_run_here"] is None and status["last_cycle"], status
        # a graceful stop: the server stops its child itself and exits 0
        assert server.stop(signal.SIGTERM) == 0
    log = (tmp_path / "server.log").read_text()
    assert "the server process died" not in log and "leaked" not in log, log[-2000:]
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children), "the scheduler child outlived its server"


def test_the_child_stops_when_its_server_is_killed(tmp_path, sqlite_template):
    import shutil

    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    env = {"GPUPOOL_SCHEDULER_PROCESS": "true"}
    server = ServerProcess(f"sqlite:///{path}", OP["Authorization"][7:], tmp_path / "s.log", **env)
    try:
        children = _children(server.proc.pid)
        assert children
        os.kill(server.proc.pid, signal.SIGKILL)  # only the parent, as an OOM kill would
        server.proc.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in children), timeout=20)
    finally:
        server.stop(signal.SIGKILL)


def _raise_flag(wake) -> None:
    wake.set()


def test_the_wake_flag_crosses_processes_and_is_taken_once():
    """API processes raise the flag; the scheduler child takes each raise once."""
    import multiprocessing

    from api.scheduler_process import WakeFlag

    context = multiprocessing.get_context("spawn")
    wake = WakeFlag(context)
    assert not wake.take()
    child = context.Process(target=_raise_flag, args=(wake,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert wake.take(), "a raise in another process is seen"
    assert not wake.take(), "and taken only once"
