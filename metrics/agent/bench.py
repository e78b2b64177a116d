"""``gpupool bench agent``: what the agent costs per pass, per scrape, per buffered sample.

NVML itself is replaced by a synthetic reader (so the numbers are the agent's own overhead
and the benchmark runs anywhere); cgroup files and the push server are real: a temporary
``/proc`` tree and a loopback HTTP server.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

from metrics.agent.attribution import PodAttributor
from metrics.agent.buffer import SampleBuffer
from metrics.agent.cgroup import HostProc
from metrics.agent.config import AgentConfig
from metrics.agent.model import GpuProcess, GpuReading, MigReading, NodeReading
from metrics.agent.pods import PodInfo
from metrics.agent.push import Pusher, fixed_token
from metrics.agent.runner import Agent
from metrics.agent.samples import UsageSample, samples_from

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class BenchResult:
    devices: int
    pass_ms: float
    scrape_ms: float
    scrape_bytes: int
    sample_json_bytes: int
    buffered_bytes_per_sample: float
    push_samples_per_s: float

    def lines(self) -> list[str]:
        return [
            f"devices per node             {self.devices}",
            f"sampling pass (no NVML)      {self.pass_ms:.3f} ms",
            f"/metrics scrape              {self.scrape_ms:.3f} ms, {self.scrape_bytes} bytes",
            f"sample JSON                  {self.sample_json_bytes} bytes",
            f"buffered sample in memory    {self.buffered_bytes_per_sample:.0f} bytes",
            f"push throughput (loopback)   {self.push_samples_per_s:,.0f} samples/s",
        ]


class _Directory:
    failures = 0

    def __init__(self, pods: dict[str, PodInfo]) -> None:
        self._pods = pods

    def lookup(self, pod_uid: str) -> PodInfo | None:
        return self._pods.get(pod_uid)


class _Reader:
    """``gpus`` GPUs, each whole or split into ``mig`` instances, two pods per device."""

    def __init__(self, gpus: int, mig: int, proc: Path) -> None:
        self.pods: dict[str, PodInfo] = {}
        built = []
        pid = 1000
        for index in range(gpus):
            devices = []
            for _ in range(max(1, mig)):
                procs = []
                for _ in range(2):
                    uid = f"{pid:08x}-0000-4000-8000-000000000000"
                    cid = f"{pid:064x}"
                    (proc / str(pid)).mkdir()
                    (proc / str(pid) / "cgroup").write_text(
                        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                        f"{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope\n"
                    )
                    self.pods[uid] = PodInfo(
                        uid, "tenant", f"job-{pid}", pid, ("main",), {cid: "main"}
                    )
                    procs.append(GpuProcess(pid, GIB))
                    pid += 1
                devices.append(tuple(procs))
            common: dict[str, Any] = {
                "index": index,
                "uuid": f"GPU-{index:08d}",
                "name": "NVIDIA H100 80GB HBM3",
                "minor": index,
                "memory_total_bytes": 80 * GIB,
                "memory_used_bytes": 4 * GIB,
                "memory_free_bytes": 76 * GIB,
                "power_w": 300.0,
                "temp_c": 60,
            }
            if mig:
                instances = tuple(
                    MigReading(
                        gi + 1,
                        "1g.10gb",
                        f"MIG-{index}-{gi}",
                        10 * GIB,
                        GIB,
                        9 * GIB,
                        processes=devices[gi],
                    )
                    for gi in range(mig)
                )
                built.append(GpuReading(**common, mig_enabled=True, mig=instances))
            else:
                built.append(GpuReading(**common, util_pct=90.0, processes=devices[0]))
        self.gpus = tuple(built)

    def read(self) -> NodeReading:
        return NodeReading(at=datetime.now(UTC), nvml_ok=True, gpus=self.gpus)

    def close(self) -> None:
        pass


def _sink() -> ThreadingHTTPServer:
    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_bench(gpus: int = 8, mig: int = 0, passes: int = 200, samples: int = 20_000) -> BenchResult:
    """Measure the agent's overhead on a synthetic node of ``gpus`` GPUs."""
    with tempfile.TemporaryDirectory() as tmp:
        reader = _Reader(gpus, mig, Path(tmp))
        config = AgentConfig(node_name="bench-node", server_url="http://127.0.0.1:9")
        buffer: SampleBuffer[UsageSample] = SampleBuffer(max(samples, 1))
        attributor = PodAttributor(HostProc(Path(tmp)), _Directory(reader.pods))
        agent = Agent(config, reader, attributor, buffer, pusher=None)
        start = time.perf_counter()
        for _ in range(passes):
            snapshot = agent.sample_once()
            samples_from(snapshot)
        pass_ms = (time.perf_counter() - start) * 1000 / passes
        start = time.perf_counter()
        for _ in range(passes):
            text = generate_latest(agent.registry)
        scrape_ms = (time.perf_counter() - start) * 1000 / passes
        one = samples_from(agent.sample_once())

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    template = one[0]
    held = [
        UsageSample(
            datetime.now(UTC),
            template.gpu_uuid,
            template.gpu_index,
            template.model,
            template.mig_instance,
            50.0,
            1024,
            81920,
            300.0,
            60,
            tuple(replace(use) for use in template.pods),
        )
        for _ in range(samples)
    ]
    per_sample = (tracemalloc.get_traced_memory()[0] - before) / samples
    tracemalloc.stop()

    server = _sink()
    try:
        buffer = SampleBuffer(samples)
        buffer.extend(held)
        with httpx.Client(timeout=10) as client:
            pusher = Pusher(
                buffer,
                f"http://127.0.0.1:{server.server_port}",
                "bench-node",
                10.0,
                fixed_token("bench"),
                client,
                batch_size=500,
            )
            start = time.perf_counter()
            pusher.push_pending()
            push_rate = samples / (time.perf_counter() - start)
    finally:
        server.shutdown()
        server.server_close()
    return BenchResult(
        devices=len(one),
        pass_ms=pass_ms,
        scrape_ms=scrape_ms,
        scrape_bytes=len(text),
        sample_json_bytes=len(json.dumps(one[0].to_json())),
        buffered_bytes_per_sample=per_sample,
        push_samples_per_s=push_rate,
    )
