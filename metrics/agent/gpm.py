"""DCGM's profiling metrics (``DCGM_FI_PROF_*``) from NVML GPM, on Hopper and later GPUs.

GPM (GPU performance monitoring) reports engine activity between two samples, so the
sampler keeps each device's previous sample and computes the metrics over the interval
since it: the first pass after start (or after a GPU comes back) has none. These are the
counters behind the "GPU Utilization" and "Tensor Core Utilization" panels of NVIDIA's
dashboard 12239, and the only utilisation NVML offers per MIG instance. GPUs without GPM
(before Hopper, or old drivers) simply have no profiling values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pynvml

from metrics.agent.model import Profiling

# Device key: (GPU index, GPU instance id or None for the whole GPU).
GpmKey = tuple[int, int | None]

_METRICS = (
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL,
    pynvml.NVML_GPM_METRIC_SM_UTIL,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
)


class GpmSampler:
    """Keeps one GPM sample per device between passes and turns sample pairs into metrics.

    ``take`` callables raise ``pynvml.NVMLError`` like any NVML call; the caller classifies
    the error. Samples are C allocations, so devices that disappear are freed by
    :meth:`end_pass` and everything by :meth:`reset`.
    """

    def __init__(self) -> None:
        self._previous: dict[GpmKey, Any] = {}
        self._seen: set[GpmKey] = set()

    def begin_pass(self) -> None:
        self._seen = set()

    def sample(self, key: GpmKey, take: Callable[[Any], None]) -> Profiling | None:
        """Take a new sample with ``take(sample)``; metrics since the previous one, if any."""
        current = pynvml.nvmlGpmSampleAlloc()
        try:
            take(current)
        except BaseException:
            _free(current)
            raise
        self._seen.add(key)
        previous = self._previous.get(key)
        self._previous[key] = current
        if previous is None:
            return None
        try:
            return _metrics(previous, current)
        finally:
            _free(previous)

    def forget(self, index: int) -> None:
        """Drop the samples of GPU ``index`` (lost: its next sample starts afresh)."""
        for key in [k for k in self._previous if k[0] == index]:
            _free(self._previous.pop(key))

    def end_pass(self) -> None:
        """Free the samples of devices not seen in this pass (a MIG instance destroyed)."""
        for key in [k for k in self._previous if k not in self._seen]:
            _free(self._previous.pop(key))

    def reset(self) -> None:
        """Free everything (the NVML session ended)."""
        for sample in self._previous.values():
            _free(sample)
        self._previous.clear()


def _free(sample: Any) -> None:
    with contextlib.suppress(pynvml.NVMLError):
        pynvml.nvmlGpmSampleFree(sample)


def _metrics(first: Any, second: Any) -> Profiling:
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(_METRICS)
    request.sample1 = first
    request.sample2 = second
    for slot, metric_id in enumerate(_METRICS):
        request.metrics[slot].metricId = metric_id
    pynvml.nvmlGpmMetricsGet(request)
    ratios: list[float | None] = []
    for slot in range(len(_METRICS)):
        metric = request.metrics[slot]
        ok = metric.nvmlReturn == pynvml.NVML_SUCCESS
        # NVML gives percent; DCGM's profiling fields are ratios.
        ratios.append(min(1.0, max(0.0, metric.value / 100.0)) if ok else None)
    return Profiling(*ratios)
