"""``gpupool agent`` as a real process: the dynamic loader finds the fake NVML through
LD_LIBRARY_PATH (as it would find the driver's), pods come from a loopback API server,
metrics are scraped over HTTP, samples reach a loopback receiver, SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.fakes import (
    GIB,
    FakeGpu,
    FakePodApi,
    Receiver,
    pod_cgroup,
    pod_json,
    render_scenario,
    write_host_proc,
)

T = TypeVar("T")
NODE = "gpu-node-7"
UID = "44444444-4444-4444-8444-444444444444"
CID = "e" * 64
LISTENING = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


class AgentProcess:
    """The agent subprocess and its stderr, read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metrics.cli", "agent", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        """SIGTERM (what the kubelet sends), wait, and release the pipe."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, found: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {what}; agent stderr:\n{self.stderr}")

    def port(self) -> int:
        def match() -> int | None:
            for line in self.lines:
                if m := LISTENING.search(line):
                    return int(m.group(1))
            return None

        return self.wait_for(match, "metrics port")


@pytest.fixture
def servers() -> Iterator[tuple[Receiver, FakePodApi]]:
    receiver = Receiver()
    api = FakePodApi(
        [
            pod_json(
                "train-0",
                UID,
                NODE,
                namespace="acme",
                containers={"main": CID},
                labels={"gpupool.io/request": "42"},
            )
        ]
    )
    yield receiver, api
    receiver.stop()
    api.stop()


def test_agent_process_end_to_end(
    fake_nvml_lib: Path, tmp_path: Path, servers: tuple[Receiver, FakePodApi]
) -> None:
    receiver, api = servers
    scenario = tmp_path / "scenario.txt"
    scenario.write_text(
        render_scenario(
            [
                FakeGpu(
                    uuid="GPU-e2e",
                    memory=(80 * GIB, 9 * GIB, 0),
                    util=(77, 20),
                    processes=[(4242, 8 * GIB)],
                ),
                FakeGpu(uuid="GPU-lost", lost=True),
            ]
        )
    )
    token = tmp_path / "token"
    token.write_text("e2e-token\n")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(fake_nvml_lib.parent)
    env["FAKE_NVML_CONFIG"] = str(scenario)
    agent = AgentProcess(
        [
            "--node-name",
            NODE,
            "--server",
            receiver.url,
            "--token-file",
            str(token),
            "--interval",
            "1",
            "--push-interval",
            "1",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--host-proc",
            str(write_host_proc(tmp_path / "proc", {4242: pod_cgroup(UID, CID)})),
            "--kubeconfig",
            str(api.kubeconfig(tmp_path / "kubeconfig")),
        ],
        env,
    )
    try:
        port = agent.port()
        agent.wait_for(lambda: receiver.samples, "samples at the receiver")

        def metrics() -> dict[str, list[tuple[dict[str, str], float]]]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return {
                f.name: [(dict(s.labels), s.value) for s in f.samples]
                for f in text_string_to_metric_families(text)
            }

        scraped = metrics()
    finally:
        code = agent.stop()
    assert code == 0, agent.stderr

    [(labels, util)] = scraped["DCGM_FI_DEV_GPU_UTIL"]
    assert util == 77.0
    assert (labels["UUID"], labels["Hostname"], labels["namespace"], labels["pod"]) == (
        "GPU-e2e",
        NODE,
        "acme",
        "train-0",
    )
    health = {lab["UUID"]: v for lab, v in scraped["gpupool_agent_gpu_healthy"]}
    assert health == {"GPU-e2e": 1.0, "": 0.0}
    assert scraped["gpupool_agent_nvml_up"] == [({"Hostname": NODE}, 1.0)]

    first = receiver.requests[0]
    assert first.path == "/v1/usage/samples"
    assert first.headers["authorization"] == "Bearer e2e-token"
    assert first.body["node"] == NODE
    sample = receiver.samples[0]
    assert (sample["gpu_uuid"], sample["util_pct"], sample["fb_used_mib"]) == (
        "GPU-e2e",
        77.0,
        9216,
    )
    assert [(p["pod"], p["request_id"], p["used_mib"]) for p in sample["pods"]] == [
        ("train-0", 42, 8192)
    ]
    # Only the healthy GPU is sampled.
    assert {s["gpu_uuid"] for s in receiver.samples} == {"GPU-e2e"}
    assert "received SIGTERM; stopping" in agent.stderr


def test_agent_process_without_nvml_serves_its_health(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "FAKE_NVML_CONFIG")}
    agent = AgentProcess(
        ["--node-name", NODE, "--listen", "127.0.0.1", "--port", "0", "--no-kubernetes"], env
    )
    try:
        port = agent.port()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        agent.wait_for(lambda: "libnvidia-ml.so.1 not found" in agent.stderr, "NVML message")
    finally:
        code = agent.stop()
    assert code == 0, agent.stderr
    assert 'gpupool_agent_nvml_up{Hostname="gpu-node-7"} 0.0' in text
    assert sum("libnvidia-ml.so.1 not found" in line for line in agent.lines) == 1
