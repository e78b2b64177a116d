"""Test doubles for the node agent: the fake NVML library, a sample receiver, a pod API.

All of them are real enough to exercise the production code paths: the fake NVML is a C
library that the real pynvml binding loads; the receiver and the pod API are loopback HTTP
servers that httpx and the official kubernetes client talk to over TCP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from metrics.agent.attribution import PodUse, Snapshot
from metrics.agent.model import GpuReading, MigReading, NodeReading, Profiling

FAKE_NVML_SOURCE = Path(__file__).parent / "fakenvml" / "fake_nvml.c"
GIB = 1024**3
MIB = 1024**2

# NVML return codes the scenarios use.
NOT_SUPPORTED = 3
DRIVER_NOT_LOADED = 9
GPU_IS_LOST = 15
UNKNOWN = 999


def compile_fake_nvml(directory: Path) -> Path:
    """Build ``libnvidia-ml.so.1`` from the C source into ``directory``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the fake NVML library")
    out = directory / "libnvidia-ml.so.1"
    subprocess.run(
        [
            gcc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libnvidia-ml.so.1",
            "-o",
            str(out),
            str(FAKE_NVML_SOURCE),
        ],
        check=True,
        capture_output=True,
    )
    return out


@dataclass
class FakeMig:
    """A MIG device of a fake GPU."""

    name: str = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    uuid: str = "MIG-00000000-0000-0000-0000-000000000001"
    gi: int | None = None
    ci: int | None = None
    memory: tuple[int, int] = (10 * GIB, 0)
    gpm: tuple[float, float, float, float, float] | None = None
    processes: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class FakeGpu:
    """One scripted GPU: values, processes, failures."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    minor: int | None = None
    memory: tuple[int, int, int] = (80 * GIB, 0, 0)
    util: tuple[int, int] = (0, 0)
    power_mw: int = 70_000
    temp: int = 30
    clocks: tuple[int, int] = (1980, 2619)
    energy_mj: int = 0
    # GPM percentages: graphics, SM, occupancy, tensor, DRAM; None = no GPM (pre-Hopper).
    gpm: tuple[float, float, float, float, float] | None = None
    processes: list[tuple[int, int]] = field(default_factory=list)
    fails: dict[str, int] = field(default_factory=dict)
    lost: bool = False
    mig_mode: int | None = None
    migs: list[FakeMig] = field(default_factory=list)


def render_scenario(
    gpus: list[FakeGpu], init_error: int = 0, count_error: int = 0, driver: str = "550.54.15"
) -> str:
    """The scenario file text the fake library reads (format in ``fake_nvml.c``)."""
    lines = [f"driver_version {driver}", f"init_error {init_error}", f"count_error {count_error}"]
    for gpu in gpus:
        lines += ["gpu", f"name {gpu.name}", f"uuid {gpu.uuid}"]
        if gpu.minor is not None:
            lines.append(f"minor {gpu.minor}")
        lines += [
            "memory {} {} {}".format(*gpu.memory),
            "util {} {}".format(*gpu.util),
            f"power_mw {gpu.power_mw}",
            f"temp {gpu.temp}",
            "clocks {} {}".format(*gpu.clocks),
            f"energy_mj {gpu.energy_mj}",
        ]
        if gpu.gpm is not None:
            lines.append("gpm {} {} {} {} {}".format(*gpu.gpm))
        if gpu.mig_mode is not None:
            lines.append(f"mig_mode {gpu.mig_mode}")
        lines += [f"process {pid} {used}" for pid, used in gpu.processes]
        lines += [f"fail {name} {code}" for name, code in gpu.fails.items()]
        if gpu.lost:
            lines.append("lost")
        for mig in gpu.migs:
            lines += ["mig", f"name {mig.name}", f"uuid {mig.uuid}"]
            if mig.gi is not None:
                lines.append(f"gi {mig.gi}")
            if mig.ci is not None:
                lines.append(f"ci {mig.ci}")
            lines.append("memory {} {}".format(*mig.memory))
            if mig.gpm is not None:
                lines.append("gpm {} {} {} {} {}".format(*mig.gpm))
            lines += [f"process {pid} {used}" for pid, used in mig.processes]
    return "\n".join(lines) + "\n"


# -- agent values ---------------------------------------------------------------------------


def example_snapshot() -> Snapshot:
    """A node with a shared whole GPU, a MIG GPU with one instance in use, and a lost GPU."""
    whole = GpuReading(
        index=0,
        uuid="GPU-a",
        name="NVIDIA H100 80GB HBM3",
        minor=4,
        memory_total_bytes=80 * GIB,
        memory_used_bytes=30 * GIB,
        memory_free_bytes=49 * GIB,
        util_pct=87.0,
        mem_copy_util_pct=40.0,
        power_w=312.5,
        temp_c=61,
        sm_clock_mhz=1980.0,
        mem_clock_mhz=2619.0,
        energy_mj=9_000_000,
        prof=Profiling(0.9, 0.8, 0.5, 0.6, 0.3),
    )
    mig = GpuReading(
        index=1,
        uuid="GPU-b",
        name="NVIDIA H100 80GB HBM3",
        minor=5,
        power_w=100.0,
        temp_c=40,
        mig_enabled=True,
        mig=(
            MigReading(
                gpu_instance_id=3,
                profile="3g.40gb",
                uuid="MIG-x",
                prof=Profiling(gr_engine_active=0.25, tensor_active=0.125),
                memory_total_bytes=40 * GIB,
                memory_used_bytes=2 * GIB,
                memory_free_bytes=38 * GIB,
            ),
        ),
    )
    lost = GpuReading(index=2, uuid="GPU-c", name="NVIDIA H100 80GB HBM3", minor=6, healthy=False)
    uses = {
        (0, None): (
            PodUse("u1", "acme", "train-0", "main", 42, 20 * GIB),
            PodUse("u2", "beta", "infer-1", "srv", None, 10 * GIB),
        ),
        (1, 3): (PodUse("u3", "acme", "notebook", "jupyter", 7, 2 * GIB),),
    }
    reading = NodeReading(
        at=datetime(2026, 11, 22, tzinfo=UTC), nvml_ok=True, gpus=(whole, mig, lost)
    )
    return Snapshot(reading=reading, pods=uses)


# -- cgroup fixtures ------------------------------------------------------------------------


def pod_cgroup(pod_uid: str, container_id: str) -> str:
    """A cgroup v2, systemd-driver ``/proc/<pid>/cgroup`` for a burstable pod's container."""
    slice_uid = pod_uid.replace("-", "_")
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{container_id}.scope\n"
    )


def write_host_proc(root: Path, cgroups: dict[int, str]) -> Path:
    """A fake host ``/proc`` with a ``<pid>/cgroup`` file per process."""
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


# -- loopback HTTP servers ------------------------------------------------------------------


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    status: int
    headers: dict[str, str]
    body: Any


class Receiver:
    """A loopback stand-in for the server's ``POST /v1/usage/samples``.

    ``statuses`` scripts the answers (popped in order; 200 once empty). ``stop()`` and
    ``start()`` simulate an outage (connection refused) on the same port.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int | tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def samples(self) -> list[dict[str, Any]]:
        """Every sample accepted (answered 2xx), in arrival order."""
        with self._lock:
            return [s for r in self.requests if r.status < 300 for s in r.body["samples"]]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._lock:
                    answer = receiver.statuses.pop(0) if receiver.statuses else 200
                    status, headers = answer if isinstance(answer, tuple) else (answer, {})
                    receiver.requests.append(
                        Received(
                            path=self.path,
                            status=status,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                        )
                    )
                payload = b'{"accepted": true}' if status < 300 else b'{"detail": "no"}'
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_port
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def pod_json(
    name: str,
    uid: str,
    node: str,
    namespace: str = "acme",
    containers: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the API server returns it; ``containers`` maps name -> runtime container ID."""
    containers = containers if containers is not None else {"main": "0" * 64}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"nodeName": node, "containers": [{"name": c} for c in containers]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": c,
                    "containerID": f"containerd://{cid}",
                    "image": "busybox",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                }
                for c, cid in containers.items()
            ],
        },
    }


class FakePodApi:
    """A loopback API server answering ``GET /api/v1/pods`` (the one call the agent makes),
    filtering by ``fieldSelector=spec.nodeName=<node>`` as the real one does."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.queries: list[dict[str, list[str]]] = []
        self.fail = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                api.queries.append(query)
                if api.fail or parts.path != "/api/v1/pods":
                    self.send_response(500 if api.fail else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                selector = query.get("fieldSelector", [""])[0]
                node = selector.removeprefix("spec.nodeName=") if selector else None
                items = [p for p in api.pods if node is None or p["spec"]["nodeName"] == node]
                payload = json.dumps(
                    {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_port
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing the official client at this server."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "agent", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running(*servers: Receiver | FakePodApi) -> Iterator[None]:
    """Stop the servers at the end of a test."""
    try:
        yield
    finally:
        for server in servers:
            server.stop()
