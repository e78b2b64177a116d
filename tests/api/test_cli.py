"""The CLI: the demo (the README's first command) and the operator helpers over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from api.process import ServerProcess, free_port

TOKEN = "cli-test-operator-token-123"


def gpupool(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_demo_runs_to_the_end(tmp_path):
    r = gpupool(
        "demo",
        "--no-keep-serving",
        "--speed",
        "0.3",
        "--port",
        str(free_port()),
        "--database",
        str(tmp_path / "demo.db"),
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for expected in (
        "submits pretrain-shard-a",
        " planned ",
        " active ",
        " completed ",
        "rejected  [quota_exhausted]",
        "[budget_exhausted]",
        "summary:",
    ):
        assert expected in out, expected
    assert "expired" in out


def test_operator_helpers_and_one_line_errors(tmp_path):
    with ServerProcess(f"sqlite:///{tmp_path}/cli.db", TOKEN, tmp_path / "log") as server:
        env = {"GPUPOOL_URL": server.url, "GPUPOOL_TOKEN": TOKEN}
        assert gpupool("classes", "create", "H100-80GB", env=env).returncode == 0
        assert gpupool("nodes", "add", "n1", "H100-80GB", "8", env=env).returncode == 0
        assert gpupool("tenants", "create", "acme", env=env).returncode == 0
        ok = gpupool(
            "quotas", "set", "acme", "H100-80GB", "--guaranteed", "4", "--limit", "8", env=env
        )
        assert ok.returncode == 0 and json.loads(ok.stdout)["limit"] == 8
        key = json.loads(gpupool("keys", "issue", "acme", env=env).stdout)["token"]
        sub = gpupool(
            "requests", "submit", "H100-80GB", "4", "PT1H", env={**env, "GPUPOOL_TOKEN": key}
        )
        assert sub.returncode == 0, sub.stderr
        assert json.loads(sub.stdout)["tenant"] == "acme"
        listed = json.loads(gpupool("tenants", "list", env=env).stdout)
        assert [t["name"] for t in listed] == ["acme"]

        bad = gpupool(
            "quotas", "set", "acme", "H100-80GB", "--guaranteed", "8", "--limit", "4", env=env
        )
        assert bad.returncode == 1
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and "limit: must be at least guaranteed" in lines[0]
    down = gpupool("tenants", "list", env={"GPUPOOL_URL": server.url, "GPUPOOL_TOKEN": TOKEN})
    assert down.returncode == 1
    assert down.stderr.strip().startswith("gpupool: error: cannot reach")
