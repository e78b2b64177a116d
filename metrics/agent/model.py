"""What the node agent reads from a GPU, as plain values.

A :class:`NodeReading` is one pass over every GPU of the node; readers (the NVML one, or a
test double) produce it and everything downstream (pod attribution, ``/metrics``, usage
samples) consumes it. Fields a GPU does not support are ``None``, never a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Profiling:
    """Activity ratios (0..1, as DCGM exports them) over the last sampling interval."""

    gr_engine_active: float | None = None
    sm_active: float | None = None
    sm_occupancy: float | None = None
    tensor_active: float | None = None
    dram_active: float | None = None


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU or MIG instance, as NVML reports it (host PID)."""

    pid: int
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class MigReading:
    """One MIG GPU instance of a MIG-enabled GPU (its compute instances merged)."""

    gpu_instance_id: int
    profile: str
    uuid: str
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    util_pct: float | None = None
    prof: Profiling | None = None
    processes: tuple[GpuProcess, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One physical GPU. ``healthy`` is False when NVML lost it; identity may then be stale."""

    index: int
    uuid: str
    name: str
    minor: int | None
    healthy: bool = True
    error: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    util_pct: float | None = None
    mem_copy_util_pct: float | None = None
    power_w: float | None = None
    temp_c: int | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    energy_mj: int | None = None
    prof: Profiling | None = None
    mig_enabled: bool = False
    mig: tuple[MigReading, ...] = ()
    processes: tuple[GpuProcess, ...] = ()

    @property
    def device(self) -> str:
        """The device node name dcgm-exporter puts in its ``device`` label."""
        return f"nvidia{self.minor if self.minor is not None else self.index}"


@dataclass(frozen=True, slots=True)
class NodeReading:
    """Everything read in one pass. ``nvml_ok`` is False when NVML could not be used at all."""

    at: datetime
    nvml_ok: bool
    error: str | None = None
    driver_version: str | None = None
    gpus: tuple[GpuReading, ...] = field(default=())
