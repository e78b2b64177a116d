"""The agent assembled in-process: fake NVML through pynvml, a fake host /proc, the pod API
through the kubernetes client, /metrics scraped over HTTP, samples pushed to a receiver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics.agent.attribution import PodAttributor
from metrics.agent.buffer import SampleBuffer
from metrics.agent.cgroup import HostProc
from metrics.agent.config import AgentConfig
from metrics.agent.model import GpuReading, NodeReading
from metrics.agent.nvml_reader import NvmlReader
from metrics.agent.pods import KubernetesPodDirectory, NoPods, kubernetes_core_api
from metrics.agent.push import Backoff, Pusher, fixed_token
from metrics.agent.runner import Agent, serve_metrics
from metrics.agent.samples import UsageSample
from tests.metrics.conftest import FakeNvml
from tests.metrics.fakes import (
    GIB,
    FakeGpu,
    FakeMig,
    FakePodApi,
    Receiver,
    pod_cgroup,
    pod_json,
    write_host_proc,
)

NODE = "gpu-node-1"
UID_TRAIN = "11111111-1111-4111-8111-111111111111"
UID_NOTEBOOK = "22222222-2222-4222-8222-222222222222"
CID_TRAIN, CID_NOTEBOOK = "a" * 64, "b" * 64
Series = list[tuple[dict[str, str], float]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def pod_api() -> Iterator[FakePodApi]:
    api = FakePodApi(
        [
            pod_json(
                "train-0",
                UID_TRAIN,
                NODE,
                namespace="acme",
                containers={"main": CID_TRAIN},
                labels={"gpupool.io/request": "42"},
            ),
            pod_json(
                "notebook-0",
                UID_NOTEBOOK,
                NODE,
                namespace="beta",
                containers={"jupyter": CID_NOTEBOOK},
            ),
        ]
    )
    yield api
    api.stop()


def scrape(port: int) -> dict[str, Series]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        f.name: [(dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def make_agent(
    tmp_path: Path,
    reader: object,
    receiver: Receiver,
    pod_api: FakePodApi | None = None,
    buffer_size: int = 1000,
) -> Agent:
    config = AgentConfig(
        node_name=NODE, server_url=receiver.url, listen_address="127.0.0.1", port=0
    )
    proc = write_host_proc(
        tmp_path / "proc",
        {
            100: pod_cgroup(UID_TRAIN, CID_TRAIN),
            101: pod_cgroup(UID_TRAIN, CID_TRAIN),
            200: pod_cgroup(UID_NOTEBOOK, CID_NOTEBOOK),
            300: "0::/system.slice/some-host-daemon.service\n",
        },
    )
    directory = (
        KubernetesPodDirectory(kubernetes_core_api(pod_api.kubeconfig(tmp_path / "kc")), NODE)
        if pod_api
        else NoPods()
    )
    buffer: SampleBuffer[UsageSample] = SampleBuffer(buffer_size)
    pusher = Pusher(
        buffer,
        receiver.url,
        NODE,
        config.interval_s,
        fixed_token("node-token"),
        httpx.Client(timeout=5),
        backoff=Backoff(jitter=0.0),
    )
    return Agent(
        config,
        reader,  # type: ignore[arg-type]
        PodAttributor(HostProc(proc), directory),
        buffer,
        pusher,
        pod_lookup_failures=lambda: directory.failures,
    )


def test_metrics_and_samples_from_the_fake_nvml_with_pod_labels(
    fake_nvml: FakeNvml, tmp_path: Path, receiver: Receiver, pod_api: FakePodApi
) -> None:
    fake_nvml.set(
        [
            FakeGpu(
                uuid="GPU-aaaa",
                minor=0,
                memory=(80 * GIB, 21 * GIB, 0),
                util=(93, 35),
                power_mw=402_000,
                temp=66,
                processes=[(100, 16 * GIB), (101, 4 * GIB), (300, 1 * GIB)],
            ),
            FakeGpu(
                uuid="GPU-bbbb",
                minor=1,
                migs=[
                    FakeMig(
                        name="NVIDIA H100 80GB HBM3 MIG 2g.20gb",
                        uuid="MIG-1",
                        gi=5,
                        memory=(20 * GIB, 3 * GIB),
                        processes=[(200, 3 * GIB)],
                    )
                ],
            ),
        ]
    )
    reader = NvmlReader(lambda: datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC))
    agent = make_agent(tmp_path, reader, receiver, pod_api)
    server = serve_metrics(agent)
    try:
        agent.sample_once()
        metrics = scrape(server.port)
    finally:
        server.stop()
        reader.close()

    [(labels, util)] = metrics["DCGM_FI_DEV_GPU_UTIL"]
    assert util == 93.0
    assert {k: labels[k] for k in ("gpu", "UUID", "device", "Hostname", "modelName")} == {
        "gpu": "0",
        "UUID": "GPU-aaaa",
        "device": "nvidia0",
        "Hostname": NODE,
        "modelName": "NVIDIA H100 80GB HBM3",
    }
    assert (labels["namespace"], labels["pod"], labels["container"]) == ("acme", "train-0", "main")
    fb = {(lab["gpu"], lab["GPU_I_ID"], lab["pod"]): v for lab, v in metrics["DCGM_FI_DEV_FB_USED"]}
    assert fb == {("0", "", "train-0"): 21 * 1024.0, ("1", "5", "notebook-0"): 3 * 1024.0}
    [(mig_labels, _)] = [s for s in metrics["DCGM_FI_DEV_FB_USED"] if s[0]["gpu"] == "1"]
    assert (mig_labels["GPU_I_PROFILE"], mig_labels["namespace"]) == ("2g.20gb", "beta")
    assert metrics["gpupool_agent_nvml_up"] == [({"Hostname": NODE}, 1.0)]
    assert metrics["process_resident_memory_bytes"][0][1] > 0

    assert agent.pusher is not None and agent.pusher.push_pending().value == "sent"
    [request] = receiver.requests
    assert request.headers["authorization"] == "Bearer node-token"
    whole, mig = request.body["samples"]
    assert (whole["gpu_uuid"], whole["util_pct"], whole["power_w"], whole["temp_c"]) == (
        "GPU-aaaa",
        93.0,
        402.0,
        66,
    )
    # Two processes of one container summed; the host daemon's 1 GiB belongs to no pod.
    assert whole["pods"] == [
        {
            "namespace": "acme",
            "pod": "train-0",
            "container": "main",
            "pod_uid": UID_TRAIN,
            "request_id": 42,
            "used_mib": 20 * 1024,
        }
    ]
    assert (mig["gpu_uuid"], mig["mig_instance"], mig["fb_used_mib"]) == ("GPU-bbbb", 5, 3072)
    assert [(p["pod"], p["request_id"]) for p in mig["pods"]] == [("notebook-0", None)]
    assert pod_api.queries[0]["fieldSelector"] == [f"spec.nodeName={NODE}"]


class OneGpu:
    """An injected reader: the seam the agent offers besides NVML."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> NodeReading:
        self.reads += 1
        at = datetime(2026, 11, 22, 10, 0, self.reads % 60, tzinfo=UTC)
        gpu = GpuReading(index=0, uuid="GPU-x", name="NVIDIA A100", minor=0, util_pct=50.0)
        return NodeReading(at=at, nvml_ok=True, gpus=(gpu,))

    def close(self) -> None:
        pass


def test_an_outage_shows_in_the_health_metrics_and_heals(
    tmp_path: Path, receiver: Receiver
) -> None:
    agent = make_agent(tmp_path, OneGpu(), receiver, buffer_size=5)
    assert agent.pusher is not None
    server = serve_metrics(agent)
    try:
        receiver.stop()
        for _ in range(8):
            agent.sample_once()
        agent.pusher.push_pending()
        during = scrape(server.port)
        receiver.start()
        agent.pusher.push_pending()
        after = scrape(server.port)
    finally:
        server.stop()
    dropped = {lab["reason"]: v for lab, v in during["gpupool_agent_samples_dropped"]}
    assert dropped == {"buffer_full": 3.0, "rejected": 0.0}
    assert during["gpupool_agent_samples_buffered"] == [({"Hostname": NODE}, 5.0)]
    assert during["gpupool_agent_push_failures"] == [({"Hostname": NODE}, 1.0)]
    assert "gpupool_agent_last_push_success_timestamp_seconds" not in during
    assert after["gpupool_agent_samples_buffered"] == [({"Hostname": NODE}, 0.0)]
    assert after["gpupool_agent_samples_pushed"] == [({"Hostname": NODE}, 5.0)]
    assert "gpupool_agent_last_push_success_timestamp_seconds" in after
    # The five newest readings arrived, oldest first.
    assert [s["ts"][-3:-1] for s in receiver.samples] == ["04", "05", "06", "07", "08"]


def test_without_a_server_the_agent_only_serves_metrics(tmp_path: Path) -> None:
    config = AgentConfig(node_name=NODE, listen_address="127.0.0.1", port=0)
    agent = Agent(
        config,
        OneGpu(),
        PodAttributor(HostProc(tmp_path), NoPods()),
        SampleBuffer(10),
        pusher=None,
    )
    agent.sample_once()
    assert agent.buffer.pending == 0
    assert agent.status().snapshot is agent.latest
