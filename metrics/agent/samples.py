"""Usage samples: what the agent pushes to ``POST /v1/usage/samples`` for accounting.

One sample per healthy device per sampling pass: a whole GPU, or one MIG instance of a
MIG-enabled GPU (``mig_instance`` = its GPU instance id). Power and temperature belong to the
physical GPU, so a MIG instance's sample repeats its GPU's values; do not sum them per
instance. A MIG instance's ``util_pct`` is its GPM engine activity (Hopper and later), as
NVML reports no utilisation in MIG mode. The wire format is documented in
``docs/node-agent.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from metrics.agent.attribution import PodUse, Snapshot
from metrics.agent.model import MIB, MigReading


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One device's measurement at one instant, with the pods that were using it."""

    ts: datetime
    gpu_uuid: str
    gpu_index: int
    model: str
    mig_instance: int | None
    util_pct: float | None
    fb_used_mib: int | None
    fb_total_mib: int | None
    power_w: float | None
    temp_c: int | None
    pods: tuple[PodUse, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The sample as the server's endpoint expects it."""
        return {
            "ts": format_ts(self.ts),
            "gpu_uuid": self.gpu_uuid,
            "gpu_index": self.gpu_index,
            "model": self.model,
            "mig_instance": self.mig_instance,
            "util_pct": self.util_pct,
            "fb_used_mib": self.fb_used_mib,
            "fb_total_mib": self.fb_total_mib,
            "power_w": self.power_w,
            "temp_c": self.temp_c,
            "pods": [
                {
                    "namespace": use.namespace or None,
                    "pod": use.pod or None,
                    "container": use.container or None,
                    "pod_uid": use.pod_uid,
                    "request_id": use.request_id,
                    "used_mib": _mib(use.used_bytes),
                }
                for use in self.pods
            ],
        }


def _mig_util(mig: MigReading) -> float | None:
    """NVML has no utilisation per MIG instance; GPM's engine activity is the measure there."""
    if mig.util_pct is not None:
        return mig.util_pct
    if mig.prof is not None and mig.prof.gr_engine_active is not None:
        return round(mig.prof.gr_engine_active * 100.0, 2)
    return None


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, to the second: ``2026-11-22T10:00:00Z``."""
    if ts.tzinfo is None:
        raise ValueError("sample timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mib(value: int | None) -> int | None:
    return None if value is None else value // MIB


def samples_from(snapshot: Snapshot) -> list[UsageSample]:
    """The usage samples of one pass; GPUs that are lost (or NVML down) yield none."""
    reading = snapshot.reading
    out: list[UsageSample] = []
    for gpu in reading.gpus:
        if not gpu.healthy:
            continue
        if gpu.mig_enabled:
            for mig in gpu.mig:
                out.append(
                    UsageSample(
                        ts=reading.at,
                        gpu_uuid=gpu.uuid,
                        gpu_index=gpu.index,
                        model=gpu.name,
                        mig_instance=mig.gpu_instance_id,
                        util_pct=_mig_util(mig),
                        fb_used_mib=_mib(mig.memory_used_bytes),
                        fb_total_mib=_mib(mig.memory_total_bytes),
                        power_w=gpu.power_w,
                        temp_c=gpu.temp_c,
                        pods=snapshot.pods_on((gpu.index, mig.gpu_instance_id)),
                    )
                )
            continue
        out.append(
            UsageSample(
                ts=reading.at,
                gpu_uuid=gpu.uuid,
                gpu_index=gpu.index,
                model=gpu.name,
                mig_instance=None,
                util_pct=gpu.util_pct,
                fb_used_mib=_mib(gpu.memory_used_bytes),
                fb_total_mib=_mib(gpu.memory_total_bytes),
                power_w=gpu.power_w,
                temp_c=gpu.temp_c,
                pods=snapshot.pods_on((gpu.index, None)),
            )
        )
    return out


def batch_body(node: str, interval_s: float, samples: list[UsageSample]) -> dict[str, Any]:
    """The JSON body of one ``POST /v1/usage/samples``."""
    return {
        "node": node,
        "interval_s": interval_s,
        "samples": [sample.to_json() for sample in samples],
    }
