"""``gpupool serve --workers N``: N API processes on one port and one scheduler child.

Each API process must listen on the port, every acknowledged submit must be planned by the
one scheduler whichever process took it, and no process may outlive its server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.bench import OP, set_up_hub
from api.process import ServerProcess, free_port, wait_for

TOKEN = OP["Authorization"][7:]


def _listeners(port: int) -> set[int]:
    """The pids of the processes holding a listening TCP socket on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        pytest.skip("needs /proc/net/tcp (Linux)")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    pids.add(int(pid))
                    break
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_api_processes_share_the_port_and_one_scheduler_plans(db_url, tmp_path):
    env = {"GPUPOOL_API_WORKERS": "3", "GPUPOOL_LEASE_TTL_S": "3"}
    with ServerProcess(db_url, TOKEN, tmp_path / "server.log", **env) as server:
        # The first process announces itself, and answers, only once every API process
        # listens (connections opened earlier would all stay with it); the others answer as
        # soon as they listen, so readiness alone does not prove it.
        log = tmp_path / "server.log"
        wait_for(lambda: "with 3 API processes" in log.read_text(), timeout=60)
        api_pids = _listeners(server.port)
        assert len(api_pids) == 3
        assert server.proc.pid in api_pids
        keys = set_up_hub(server.url, gpus=64, tenants=2)
        auth = {"Authorization": f"Bearer {keys['tenant-00']}"}
        ids = []
        for i in range(30):
            # a new connection each time, so the kernel spreads them over the processes
            with httpx.Client(base_url=server.url, timeout=10) as c:
                body = {"gpu_class": "H100-80GB", "gpus": 1, "duration": 3600, "name": f"w{i}"}
                r = c.post("/v1/requests", json=body, headers=auth)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        assert len(set(ids)) == 30
        with httpx.Client(base_url=server.url, timeout=10) as c:

            def all_active() -> bool:
                page = c.get("/v1/requests", params={"limit": 100}, headers=auth).json()
                states = {r["id"]: r["state"] for r in page["items"]}
                return all(states.get(i) == "active" for i in ids)

            wait_for(all_active, timeout=60)
            status = c.get("/v1/scheduler", headers=OP).json()
            assert status["is_leader"] and status["cycles_run_here"] is None, status
        assert server.stop(signal.SIGTERM) == 0  # it stopped the others itself
    others = api_pids - {server.proc.pid}
    wait_for(lambda: not any(_alive(p) for p in others), timeout=30)
    text = (tmp_path / "server.log").read_text()
    assert "the server process died" not in text and "leaked" not in text, text[-2000:]


def test_api_processes_stop_when_the_server_is_killed(tmp_path, sqlite_template):
    import shutil

    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    env = {"GPUPOOL_API_WORKERS": "2"}
    server = ServerProcess(f"sqlite:///{path}", TOKEN, tmp_path / "s.log", **env)
    try:
        wait_for(lambda: len(_listeners(server.port)) == 2, timeout=30)
        others = _listeners(server.port) - {server.proc.pid}
        assert len(others) == 1
        os.kill(server.proc.pid, signal.SIGKILL)  # only the first process, as an OOM kill would
        server.proc.wait(10)
        wait_for(lambda: not any(_alive(p) for p in others), timeout=20)
    finally:
        server.stop(signal.SIGKILL)


def test_api_processes_share_each_keys_rate_limit(tmp_path, sqlite_template):
    import shutil

    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    env = {
        "GPUPOOL_API_WORKERS": "2",
        "GPUPOOL_RATE_LIMIT_PER_S": "0.5",
        "GPUPOOL_RATE_LIMIT_BURST": "10",
    }
    with ServerProcess(f"sqlite:///{path}", TOKEN, tmp_path / "s.log", **env) as server:
        wait_for(lambda: "with 2 API processes" in (tmp_path / "s.log").read_text(), timeout=60)
        keys = set_up_hub(server.url, gpus=8, tenants=1)  # the operator has no limit
        auth = {"Authorization": f"Bearer {keys['tenant-00']}"}
        codes = []
        started = time.monotonic()
        for _ in range(30):
            # a new connection each time: the kernel spreads them over both processes, and
            # with a bucket per process the key would get up to twice its burst
            with httpx.Client(base_url=server.url, timeout=10) as c:
                codes.append(c.get("/v1/requests", headers=auth).status_code)
        refilled = (time.monotonic() - started) * 0.5
        assert set(codes) <= {200, 429}
        assert 10 <= codes.count(200) <= 10 + refilled + 1, codes


def test_workers_need_the_scheduler_process(tmp_path):
    env = {
        **os.environ,
        "GPUPOOL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "GPUPOOL_OPERATOR_TOKEN": TOKEN,
    }
    args = ["serve", "--port", str(free_port()), "--workers", "2", "--single-process"]
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers above 1 needs the scheduler process" in done.stderr
    assert not Path(tmp_path / "x.db").exists(), "refused before touching the database"


def test_a_taken_port_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "GPUPOOL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "GPUPOOL_OPERATOR_TOKEN": TOKEN,
        }
        done = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"gpupool: error: cannot listen on http://127.0.0.1:{port}:")
    )
