"""The node agent's loops: sample the GPUs, serve ``/metrics``, push usage samples.

:class:`Agent` ties the parts together with injected seams (reader, pod directory, HTTP
client, clocks), so tests run it without a GPU, a cluster or a server. :func:`build_agent`
wires the real ones from an :class:`~metrics.agent.config.AgentConfig`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from metrics.agent.attribution import PodAttributor, Snapshot
from metrics.agent.buffer import SampleBuffer
from metrics.agent.cgroup import HostProc
from metrics.agent.collector import AgentCollector, AgentStatus
from metrics.agent.config import AgentConfig
from metrics.agent.nvml_reader import GpuReader, NvmlReader
from metrics.agent.pods import KubernetesPodDirectory, NoPods, PodDirectory, kubernetes_core_api
from metrics.agent.push import Pusher, fixed_token, token_from_file
from metrics.agent.samples import UsageSample, samples_from

log = logging.getLogger(__name__)


class Agent:
    """Samples on a timer into a buffer and keeps the latest snapshot for scrapes."""

    def __init__(
        self,
        config: AgentConfig,
        reader: GpuReader,
        attributor: PodAttributor,
        buffer: SampleBuffer[UsageSample],
        pusher: Pusher | None,
        pod_lookup_failures: Callable[[], int] = lambda: 0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.reader = reader
        self.buffer = buffer
        self.pusher = pusher
        self._attributor = attributor
        self._pod_lookup_failures = pod_lookup_failures
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._latest: Snapshot | None = None
        self._last_sample: float | None = None
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(config.node_name, self.status))
        # process_resident_memory_bytes and friends: the DaemonSet's own footprint.
        ProcessCollector(registry=self.registry)

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def sample_once(self) -> Snapshot:
        """One pass: read the GPUs, attribute pods, publish the snapshot, buffer samples."""
        snapshot = self._attributor.snapshot(self.reader.read())
        self._latest = snapshot  # One reference swap: scrapes see the old or the new one.
        self._last_sample = self._wall_clock()
        if self.pusher is not None:
            self.buffer.extend(samples_from(snapshot))
        return snapshot

    def status(self) -> AgentStatus:
        pusher = self.pusher
        return AgentStatus(
            snapshot=self._latest,
            samples_buffered=self.buffer.pending,
            dropped_buffer_full=self.buffer.dropped_full,
            dropped_rejected=self.buffer.dropped_rejected,
            pushed=pusher.pushed if pusher else 0,
            push_failures=pusher.failures if pusher else 0,
            last_push_success=pusher.last_success if pusher else None,
            last_sample=self._last_sample,
            pod_lookup_failures=self._pod_lookup_failures(),
        )

    def run_sampler(self, stop: threading.Event) -> None:
        """Sample every ``interval_s`` on a fixed grid (no drift) until ``stop``."""
        interval = self.config.interval_s
        next_at = self._monotonic()
        while not stop.is_set():
            try:
                self.sample_once()
            except Exception:
                # A bug or an odd /proc entry must not end the sampling of a production node.
                log.exception("sampling the GPUs failed; trying again next interval")
            next_at += interval
            now = self._monotonic()
            if next_at < now:  # Fell behind (a slow pass): skip the missed ticks.
                next_at = now + interval - ((now - next_at) % interval)
            stop.wait(next_at - now)

    def run(self, stop: threading.Event) -> None:
        """Run the sampler and (when configured) the pusher until ``stop`` is set."""
        threads = [threading.Thread(target=self.run_sampler, args=(stop,), name="sampler")]
        if self.pusher is not None:
            threads.append(
                threading.Thread(
                    target=self.pusher.run,
                    args=(stop, self.config.push_interval_s),
                    name="pusher",
                )
            )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.reader.close()
        if self.pusher is not None:
            self.pusher.close()


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The running ``/metrics`` HTTP server."""

    port: int
    stop: Callable[[], None]


def serve_metrics(agent: Agent) -> MetricsServer:
    """Serve the agent's registry on the configured address and port."""
    server, thread = start_http_server(
        agent.config.port, addr=agent.config.listen_address, registry=agent.registry
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsServer(port=int(server.server_port), stop=stop)


def build_agent(config: AgentConfig, reader: GpuReader | None = None) -> Agent:
    """The agent with its real parts: NVML, the host's ``/proc``, the API server, httpx."""
    directory: PodDirectory = NoPods()
    if config.kubernetes:
        directory = KubernetesPodDirectory(
            kubernetes_core_api(config.kubeconfig),
            config.node_name,
            refresh_s=config.pod_refresh_s,
            request_timeout_s=config.request_timeout_s,
        )
    buffer: SampleBuffer[UsageSample] = SampleBuffer(config.buffer_size)
    pusher = None
    if config.server_url is not None:
        token = (
            token_from_file(config.token_file)
            if config.token_file is not None
            else fixed_token(config.token)
        )
        pusher = Pusher(
            buffer,
            config.server_url,
            config.node_name,
            config.interval_s,
            token,
            httpx.Client(timeout=config.request_timeout_s),
            batch_size=config.batch_size,
        )
    return Agent(
        config,
        reader or NvmlReader(lambda: datetime.now(UTC), retry_init_s=config.nvml_retry_s),
        PodAttributor(HostProc(config.host_proc), directory),
        buffer,
        pusher,
        pod_lookup_failures=lambda: directory.failures,
    )
