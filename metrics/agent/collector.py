"""The agent's ``/metrics``: DCGM-exporter-compatible GPU metrics and its own health.

A custom collector formats the latest :class:`~metrics.agent.attribution.Snapshot` at scrape
time (no NVML call on the scrape path). GPU metrics use dcgm-exporter's names, units and
labels, so NVIDIA's Grafana dashboard 12239 and existing alerts work unchanged:

- labels ``gpu``, ``UUID``, ``device`` (``nvidia<minor>``), ``modelName``, ``Hostname``,
  ``GPU_I_PROFILE`` and ``GPU_I_ID`` (empty unless MIG), ``container``, ``namespace``,
  ``pod`` (of the pods whose processes use the device; empty when none);
- one series per device and pod: when several pods share a GPU, its values repeat for each,
  as dcgm-exporter does, so aggregate with ``max by (gpu)`` like the stock dashboard;
- on a MIG-enabled GPU, memory and activity are per MIG instance, while power,
  temperature, clocks and energy are per GPU (GPU instance labels empty);
- ``DCGM_FI_PROF_*`` come from NVML GPM (Hopper and later), which dashboard 12239 uses for
  its utilisation panels; on older GPUs they are absent, as with dcgm-exporter without
  profiling.

The ``gpupool_agent_*`` metrics report NVML health, per-GPU health and the push pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from metrics.agent.attribution import PodUse, Snapshot
from metrics.agent.model import MIB, GpuReading, Profiling

DCGM_LABELS = (
    "gpu",
    "UUID",
    "device",
    "modelName",
    "Hostname",
    "GPU_I_PROFILE",
    "GPU_I_ID",
    "container",
    "namespace",
    "pod",
)

# name -> help; units as dcgm-exporter exports them.
DCGM_METRICS: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "Memory utilization (in %).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_MEM_CLOCK": "Memory clock frequency (in MHz).",
    # Monotonic since the driver loaded; a gauge here because prometheus_client would rename
    # a counter to ..._total and break the DCGM name. rate() and increase() work on it.
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "Total energy consumed since boot (in mJ).",
    # Profiling ratios (0..1) from NVML GPM on Hopper and later; absent elsewhere.
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics or compute engine is active.",
    "DCGM_FI_PROF_SM_ACTIVE": "Ratio of SMs with work assigned, averaged over the interval.",
    "DCGM_FI_PROF_SM_OCCUPANCY": "Ratio of resident warps to the SMs' maximum.",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "Ratio of time any tensor core pipe is active.",
    "DCGM_FI_PROF_DRAM_ACTIVE": "Ratio of device memory bandwidth in use.",
}


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """The agent's state at scrape time, as the collector needs it."""

    snapshot: Snapshot | None
    samples_buffered: int
    dropped_buffer_full: int
    dropped_rejected: int
    pushed: int
    push_failures: int
    last_push_success: float | None
    last_sample: float | None
    pod_lookup_failures: int


class AgentCollector(Collector):
    """Formats the latest snapshot and the agent's counters for Prometheus."""

    def __init__(self, hostname: str, status: Callable[[], AgentStatus]) -> None:
        self._hostname = hostname
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield from self._dcgm(status.snapshot)
        yield from self._health(status)

    # -- DCGM-compatible GPU metrics -----------------------------------------------------

    def _dcgm(self, snapshot: Snapshot | None) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=DCGM_LABELS)
            for name, doc in DCGM_METRICS.items()
        }
        if snapshot is not None:
            for gpu in snapshot.reading.gpus:
                if gpu.healthy:
                    self._add_gpu(families, snapshot, gpu)
        yield from families.values()

    def _add_gpu(
        self, families: dict[str, GaugeMetricFamily], snapshot: Snapshot, gpu: GpuReading
    ) -> None:
        base = [str(gpu.index), gpu.uuid, gpu.device, gpu.name, self._hostname]
        whole_gpu = {
            "DCGM_FI_DEV_POWER_USAGE": gpu.power_w,
            "DCGM_FI_DEV_GPU_TEMP": gpu.temp_c,
            "DCGM_FI_DEV_SM_CLOCK": gpu.sm_clock_mhz,
            "DCGM_FI_DEV_MEM_CLOCK": gpu.mem_clock_mhz,
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": gpu.energy_mj,
        }
        per_device: dict[str, float | int | None]
        if gpu.mig_enabled:
            _add(families, whole_gpu, [*base, "", ""], ())
            for mig in gpu.mig:
                per_device = {
                    "DCGM_FI_DEV_GPU_UTIL": mig.util_pct,
                    "DCGM_FI_DEV_FB_USED": _mib(mig.memory_used_bytes),
                    "DCGM_FI_DEV_FB_FREE": _mib(mig.memory_free_bytes),
                    **_profiling(mig.prof),
                }
                key = (gpu.index, mig.gpu_instance_id)
                labels = [*base, mig.profile, str(mig.gpu_instance_id)]
                _add(families, per_device, labels, snapshot.pods_on(key))
            return
        per_device = {
            **whole_gpu,
            "DCGM_FI_DEV_GPU_UTIL": gpu.util_pct,
            "DCGM_FI_DEV_MEM_COPY_UTIL": gpu.mem_copy_util_pct,
            "DCGM_FI_DEV_FB_USED": _mib(gpu.memory_used_bytes),
            "DCGM_FI_DEV_FB_FREE": _mib(gpu.memory_free_bytes),
            **_profiling(gpu.prof),
        }
        _add(families, per_device, [*base, "", ""], snapshot.pods_on((gpu.index, None)))

    # -- the agent's own health ----------------------------------------------------------

    def _health(self, status: AgentStatus) -> Iterator[Metric]:
        reading = status.snapshot.reading if status.snapshot else None
        host = [self._hostname]
        up = GaugeMetricFamily(
            "gpupool_agent_nvml_up",
            "1 when NVML is initialised and answering, else 0.",
            labels=["Hostname"],
        )
        up.add_metric(host, 1.0 if reading is not None and reading.nvml_ok else 0.0)
        yield up
        healthy = GaugeMetricFamily(
            "gpupool_agent_gpu_healthy",
            "1 when the GPU answers NVML, 0 when it is lost or NVML is down.",
            labels=["Hostname", "gpu", "UUID"],
        )
        for gpu in reading.gpus if reading else ():
            healthy.add_metric([*host, str(gpu.index), gpu.uuid], 1.0 if gpu.healthy else 0.0)
        yield healthy
        buffered = GaugeMetricFamily(
            "gpupool_agent_samples_buffered",
            "Usage samples not yet accepted by the server (buffered or being pushed).",
            labels=["Hostname"],
        )
        buffered.add_metric(host, float(status.samples_buffered))
        yield buffered
        dropped = CounterMetricFamily(
            "gpupool_agent_samples_dropped",
            "Usage samples dropped: buffer_full (oldest, during an outage) or rejected (invalid).",
            labels=["Hostname", "reason"],
        )
        dropped.add_metric([*host, "buffer_full"], float(status.dropped_buffer_full))
        dropped.add_metric([*host, "rejected"], float(status.dropped_rejected))
        yield dropped
        pushed = CounterMetricFamily(
            "gpupool_agent_samples_pushed",
            "Usage samples accepted by the server.",
            labels=["Hostname"],
        )
        pushed.add_metric(host, float(status.pushed))
        yield pushed
        failures = CounterMetricFamily(
            "gpupool_agent_push_failures",
            "POSTs of usage samples that did not succeed.",
            labels=["Hostname"],
        )
        failures.add_metric(host, float(status.push_failures))
        yield failures
        lookups = CounterMetricFamily(
            "gpupool_agent_pod_lookup_failures",
            "Failed lists of this node's pods.",
            labels=["Hostname"],
        )
        lookups.add_metric(host, float(status.pod_lookup_failures))
        yield lookups
        yield from _timestamp(
            "gpupool_agent_last_push_success_timestamp_seconds",
            "Unix time of the last push the server accepted.",
            host,
            status.last_push_success,
        )
        yield from _timestamp(
            "gpupool_agent_last_sample_timestamp_seconds",
            "Unix time of the last pass over the GPUs.",
            host,
            status.last_sample,
        )


def _timestamp(name: str, doc: str, host: list[str], value: float | None) -> Iterable[Metric]:
    """A timestamp gauge, absent until the event first happens (rather than a fake 1970)."""
    if value is None:
        return []
    family = GaugeMetricFamily(name, doc, labels=["Hostname"])
    family.add_metric(host, value)
    return [family]


def _profiling(prof: Profiling | None) -> dict[str, float | int | None]:
    if prof is None:
        return {}
    return {
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": prof.gr_engine_active,
        "DCGM_FI_PROF_SM_ACTIVE": prof.sm_active,
        "DCGM_FI_PROF_SM_OCCUPANCY": prof.sm_occupancy,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": prof.tensor_active,
        "DCGM_FI_PROF_DRAM_ACTIVE": prof.dram_active,
    }


def _mib(value: int | None) -> int | None:
    return None if value is None else value // MIB


def _pod_labels(uses: tuple[PodUse, ...]) -> list[tuple[str, str, str]]:
    """Distinct (container, namespace, pod) label triples; one empty triple when no pod."""
    triples = sorted({(u.container, u.namespace, u.pod) for u in uses})
    return triples or [("", "", "")]


def _add(
    families: dict[str, GaugeMetricFamily],
    values: dict[str, float | int | None],
    labels: list[str],
    uses: tuple[PodUse, ...],
) -> None:
    for pod_labels in _pod_labels(uses):
        for name, value in values.items():
            if value is not None:
                families[name].add_metric([*labels, *pod_labels], float(value))
