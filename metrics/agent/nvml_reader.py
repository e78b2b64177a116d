"""Reads every GPU and MIG instance of the node through NVML (the ``pynvml`` binding).

:class:`GpuReader` is the seam: the agent only sees :class:`~metrics.agent.model.NodeReading`
values, so tests can inject a reader. :class:`NvmlReader` is the real one. It survives NVML
failures instead of crashing the DaemonSet pod: a missing library or an unloaded driver is
reported on one stderr line and retried; a lost GPU is marked unhealthy while the others keep
being read; a field the GPU does not support is simply absent.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

import pynvml

from metrics.agent.gpm import GpmSampler
from metrics.agent.model import GpuProcess, GpuReading, MigReading, NodeReading, Profiling

log = logging.getLogger(__name__)

T = TypeVar("T")

# The library or driver as a whole is unusable: drop the session and initialise again later.
_NODE_DOWN = frozenset(
    {
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    }
)
# This GPU is gone (fell off the bus, needs a reset); the other GPUs may be fine.
_GPU_DOWN = frozenset({pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED})
# The GPU or driver does not offer this field: expected, not worth a log line.
_ABSENT = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NO_DATA,
    }
)
_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)\s*$")


class GpuReader(Protocol):
    """Produces one :class:`NodeReading` per call; never raises for NVML trouble."""

    def read(self) -> NodeReading: ...

    def close(self) -> None: ...


class _NodeDown(Exception):
    """NVML as a whole stopped working in the middle of a pass."""


class _GpuDown(Exception):
    """The GPU being read was lost."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _code(exc: pynvml.NVMLError) -> int:
    return int(exc.value)


def _describe(exc: pynvml.NVMLError) -> str:
    return f"{exc} (NVML error {_code(exc)})"


def init_failure_message(exc: pynvml.NVMLError, retry_s: float) -> str:
    """The one line an operator reads when NVML cannot be initialised, with the likely cause."""
    code = _code(exc)
    if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        cause = (
            "NVML library libnvidia-ml.so.1 not found: is the NVIDIA driver installed and "
            "its libraries visible in this container (NVIDIA container toolkit or a hostPath)?"
        )
    elif code == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        cause = "NVIDIA kernel driver not loaded on this node (NVML: Driver Not Loaded)"
    elif code == pynvml.NVML_ERROR_NO_PERMISSION:
        cause = "no permission to open the NVIDIA devices (NVML: Insufficient Permissions)"
    else:
        cause = f"NVML initialisation failed: {_describe(exc)}"
    return f"{cause}; serving agent health metrics only, retrying every {retry_s:g}s"


class NvmlReader:
    """The real :class:`GpuReader`: one NVML session, re-initialised after failures."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        retry_init_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._retry_init_s = retry_init_s
        self._monotonic = monotonic
        self._initialized = False
        self._next_init_at = 0.0
        self._init_error: str | None = None
        self._driver_version: str | None = None
        # Last identity seen per GPU index, so a GPU that is lost keeps its labels.
        self._identity: dict[int, tuple[str, str, int | None]] = {}
        self._warned: set[tuple[int, str, int]] = set()
        self._gpm = GpmSampler()
        self._gpm_support: dict[int, bool] = {}

    # -- session -------------------------------------------------------------------------

    def _ensure_session(self) -> bool:
        if self._initialized:
            return True
        now = self._monotonic()
        if now < self._next_init_at:
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self._next_init_at = now + self._retry_init_s
            message = init_failure_message(exc, self._retry_init_s)
            if message != self._init_error:
                # One line per distinct failure, not one per retry.
                log.error(message)
            self._init_error = message
            return False
        self._initialized = True
        self._init_error = None
        try:
            self._driver_version = str(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            self._driver_version = None
        log.info("NVML initialised (driver %s)", self._driver_version or "unknown")
        return True

    def _drop_session(self, reason: str) -> None:
        log.error("NVML stopped working (%s); re-initialising in %gs", reason, self._retry_init_s)
        self._init_error = f"NVML stopped working: {reason}"
        self._initialized = False
        self._next_init_at = self._monotonic() + self._retry_init_s
        self._forget_gpm()
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()  # The session is unusable already; release what we can.

    def close(self) -> None:
        """End the NVML session, if one is open."""
        if self._initialized:
            self._initialized = False
            self._forget_gpm()
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    def _forget_gpm(self) -> None:
        self._gpm.reset()
        self._gpm_support.clear()

    # -- reading -------------------------------------------------------------------------

    def read(self) -> NodeReading:
        """Read every GPU; when NVML is down, known GPUs are reported unhealthy."""
        at = self._clock()
        if not self._ensure_session():
            return self._down_reading(at)
        self._gpm.begin_pass()
        try:
            count = self._node_call(pynvml.nvmlDeviceGetCount)
            gpus = tuple(self._read_gpu(index) for index in range(count))
        except _NodeDown as exc:
            self._drop_session(str(exc))
            return self._down_reading(at)
        self._gpm.end_pass()
        return NodeReading(at=at, nvml_ok=True, driver_version=self._driver_version, gpus=gpus)

    def _down_reading(self, at: datetime) -> NodeReading:
        error = self._init_error or "NVML unavailable"
        gpus = tuple(
            GpuReading(index=i, uuid=uuid, name=name, minor=minor, healthy=False, error=error)
            for i, (uuid, name, minor) in sorted(self._identity.items())
        )
        return NodeReading(at=at, nvml_ok=False, error=error, gpus=gpus)

    def _node_call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except pynvml.NVMLError as exc:
            raise _NodeDown(_describe(exc)) from exc

    def _field(self, index: int, name: str, fn: Callable[..., T], *args: Any) -> T | None:
        """One NVML call for one field of GPU ``index``; ``None`` when it has no value."""
        try:
            return fn(*args)
        except pynvml.NVMLError as exc:
            self._classify(index, name, exc)
            return None

    def _classify(self, index: int, name: str, exc: pynvml.NVMLError) -> None:
        """Raise for errors that end the pass or the GPU; otherwise the field is just absent."""
        code = _code(exc)
        if code in _NODE_DOWN:
            raise _NodeDown(_describe(exc)) from exc
        if code in _GPU_DOWN:
            raise _GpuDown(_describe(exc)) from exc
        if code not in _ABSENT and (index, name, code) not in self._warned:
            # Unexpected but not fatal: say it once per GPU, field and error, then stay quiet.
            self._warned.add((index, name, code))
            log.warning("GPU %d: reading %s failed: %s", index, name, _describe(exc))

    def _read_gpu(self, index: int) -> GpuReading:
        try:
            return self._read_healthy_gpu(index)
        except _GpuDown as exc:
            self._gpm.forget(index)
            self._gpm_support.pop(index, None)
            uuid, name, minor = self._identity.get(index, ("", "", None))
            if (index, "lost", 0) not in self._warned:
                self._warned.add((index, "lost", 0))
                log.error("GPU %d (%s) is lost: %s", index, uuid or "unknown UUID", exc.error)
            return GpuReading(
                index=index, uuid=uuid, name=name, minor=minor, healthy=False, error=exc.error
            )

    def _read_healthy_gpu(self, index: int) -> GpuReading:
        handle = self._field(index, "handle", pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            raise _GpuDown("no NVML handle")
        known = self._identity.get(index, ("", "", None))
        uuid = self._field(index, "uuid", pynvml.nvmlDeviceGetUUID, handle) or known[0]
        name = self._field(index, "name", pynvml.nvmlDeviceGetName, handle) or known[1]
        minor = self._field(index, "minor", pynvml.nvmlDeviceGetMinorNumber, handle)
        self._identity[index] = (str(uuid), str(name), minor)
        self._warned.discard((index, "lost", 0))

        total, used, free = self._memory(index, handle)
        util = self._field(index, "util", pynvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = self._field(index, "power", pynvml.nvmlDeviceGetPowerUsage, handle)
        temp = self._field(
            index, "temp", pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU
        )
        clock = pynvml.nvmlDeviceGetClockInfo
        sm = self._field(index, "clock", clock, handle, pynvml.NVML_CLOCK_SM)
        mem = self._field(index, "clock", clock, handle, pynvml.NVML_CLOCK_MEM)
        energy = self._field(index, "energy", pynvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        modes: list[int] | None = self._field(
            index, "mig_mode", pynvml.nvmlDeviceGetMigMode, handle
        )
        mig_enabled = modes is not None and modes[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        gpm = self._gpm_supported(index, handle)
        instances = self._read_mig(index, handle, gpm) if mig_enabled else ()
        processes = () if mig_enabled else self._processes(index, handle)
        prof = None
        if gpm and not mig_enabled:
            prof = self._profiling(
                index, (index, None), lambda s: pynvml.nvmlGpmSampleGet(handle, s)
            )
        return GpuReading(
            index=index,
            uuid=str(uuid),
            name=str(name),
            minor=minor,
            memory_total_bytes=total,
            memory_used_bytes=used,
            memory_free_bytes=free,
            util_pct=float(util.gpu) if util is not None else None,
            mem_copy_util_pct=float(util.memory) if util is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            temp_c=int(temp) if temp is not None else None,
            sm_clock_mhz=float(sm) if sm is not None else None,
            mem_clock_mhz=float(mem) if mem is not None else None,
            energy_mj=int(energy) if energy is not None else None,
            prof=prof,
            mig_enabled=mig_enabled,
            mig=instances,
            processes=processes,
        )

    def _memory(self, index: int, handle: Any) -> tuple[int | None, int | None, int | None]:
        """Total, used and free bytes; the v2 call keeps the driver's reservation out of used."""
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
        except pynvml.NVMLError as exc:
            if _code(exc) == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                # Drivers older than the v2 call: the v1 numbers count reserved as used.
                info = self._field(index, "memory", pynvml.nvmlDeviceGetMemoryInfo, handle)
            else:
                self._classify(index, "memory", exc)
                info = None
        if info is None:
            return None, None, None
        return int(info.total), int(info.used), int(info.free)

    def _processes(self, index: int, handle: Any) -> tuple[GpuProcess, ...]:
        procs = self._field(
            index, "processes", pynvml.nvmlDeviceGetComputeRunningProcesses_v3, handle
        )
        return tuple(GpuProcess(pid=int(p.pid), used_bytes=p.usedGpuMemory) for p in (procs or []))

    def _gpm_supported(self, index: int, handle: Any) -> bool:
        """Whether the GPU has GPM (asked once per GPU and session)."""
        if index not in self._gpm_support:
            support = self._field(index, "gpm", pynvml.nvmlGpmQueryDeviceSupport, handle)
            self._gpm_support[index] = bool(support is not None and support.isSupportedDevice)
        return self._gpm_support[index]

    def _profiling(
        self, index: int, key: tuple[int, int | None], take: Callable[[Any], Any]
    ) -> Profiling | None:
        return self._field(index, "gpm", self._gpm.sample, key, take)

    def _read_mig(self, index: int, handle: Any, gpm: bool) -> tuple[MigReading, ...]:
        """The MIG instances of a MIG-enabled GPU, one per GPU instance id."""
        slots = self._field(index, "mig", pynvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        by_gi: dict[int, MigReading] = {}
        for slot in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError as exc:
                if _code(exc) != pynvml.NVML_ERROR_NOT_FOUND:
                    self._classify(index, "mig", exc)
                continue  # NOT_FOUND is an empty slot: no MIG device was created there.
            gi = self._field(index, "mig", pynvml.nvmlDeviceGetGpuInstanceId, mig)
            if gi is None:
                continue
            reading = self._read_mig_device(index, mig, int(gi))
            if gpm and reading.gpu_instance_id not in by_gi:
                reading = replace(reading, prof=self._mig_profiling(index, handle, int(gi)))
            earlier = by_gi.get(reading.gpu_instance_id)
            if earlier is not None:
                # Several compute instances share one GPU instance (and its memory): one
                # instance for the metrics, with the processes of all of them.
                reading = _merge_compute_instances(earlier, reading)
            by_gi[reading.gpu_instance_id] = reading
        return tuple(by_gi[gi] for gi in sorted(by_gi))

    def _mig_profiling(self, index: int, handle: Any, gi: int) -> Profiling | None:
        return self._profiling(
            index, (index, gi), lambda s: pynvml.nvmlGpmMigSampleGet(handle, gi, s)
        )

    def _read_mig_device(self, index: int, mig: Any, gi: int) -> MigReading:
        name = self._field(index, "mig", pynvml.nvmlDeviceGetName, mig) or ""
        uuid = self._field(index, "mig", pynvml.nvmlDeviceGetUUID, mig) or ""
        total, used, free = self._memory(index, mig)
        util = self._field(index, "util", pynvml.nvmlDeviceGetUtilizationRates, mig)
        match = _MIG_PROFILE.search(str(name))
        return MigReading(
            gpu_instance_id=gi,
            profile=match.group(1) if match else "",
            uuid=str(uuid),
            memory_total_bytes=total,
            memory_used_bytes=used,
            memory_free_bytes=free,
            util_pct=float(util.gpu) if util is not None else None,
            processes=self._processes(index, mig),
        )


def _merge_compute_instances(first: MigReading, other: MigReading) -> MigReading:
    seen = {p.pid for p in first.processes}
    extra = tuple(p for p in other.processes if p.pid not in seen)
    return MigReading(
        gpu_instance_id=first.gpu_instance_id,
        profile=first.profile,
        uuid=first.uuid,
        memory_total_bytes=first.memory_total_bytes,
        memory_used_bytes=first.memory_used_bytes,
        memory_free_bytes=first.memory_free_bytes,
        util_pct=first.util_pct,
        prof=first.prof,
        processes=first.processes + extra,
    )
