"""Usage samples pushed by the node agents, and usage reports (JSON and CSV)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from scheduler.idle import Flagged
from scheduler.services.accounting import FIGURES, UsageLine, UsageReport
from scheduler.services.usage import Batch, IngestResult, PodUse, Sample

#: Bounds that keep every number storable (64-bit integers, finite floats) and every
#: timestamp within what the database and interval arithmetic handle; real readings are far
#: inside them.
_MAX_INT = 2**53
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class _Lenient(BaseModel):
    """Agent input ignores fields it does not know: an agent newer than the server must not
    have its batches refused (the agent drops refused batches)."""

    model_config = ConfigDict(extra="ignore")


class PodIn(_Lenient):
    namespace: str | None = Field(None, max_length=253)
    pod: str | None = Field(None, max_length=253)
    container: str | None = Field(None, max_length=253)
    pod_uid: str | None = Field(None, max_length=64)
    request_id: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="The pod's gpupool.io/request label; checked, not trusted.",
    )
    used_mib: int | None = Field(None, ge=0, le=_MAX_INT)


class SampleIn(_Lenient):
    ts: AwareDatetime = Field(description="When the reading was taken (RFC 3339).")
    gpu_uuid: str = Field(min_length=1, max_length=100)
    gpu_index: int | None = Field(None, ge=0, le=65535)
    model: str | None = Field(None, max_length=200)
    mig_instance: int | None = Field(
        None, ge=0, le=65535, description="MIG GPU instance id, or null."
    )
    util_pct: float | None = Field(None, ge=0, le=100)
    fb_used_mib: int | None = Field(None, ge=0, le=_MAX_INT)
    fb_total_mib: int | None = Field(None, ge=0, le=_MAX_INT)
    power_w: float | None = Field(None, ge=0, le=1_000_000, allow_inf_nan=False)
    temp_c: int | None = Field(None, ge=-273, le=1000)
    pods: list[PodIn] = Field(default_factory=list, max_length=256)

    @field_validator("ts")
    @classmethod
    def _not_ancient(cls, ts: datetime) -> datetime:
        if ts < _EARLIEST:
            raise ValueError("must be after 2000-01-01T00:00:00Z")
        return ts


class SamplesIn(_Lenient):
    node: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^\S+$",
        description="The node's name as the scheduler knows it (the Kubernetes node name).",
    )
    interval_s: float = Field(gt=0, le=3600, description="The agent's sampling interval.")
    samples: list[SampleIn]

    def to_domain(self) -> Batch:
        return Batch(
            node=self.node,
            interval_s=self.interval_s,
            samples=tuple(
                Sample(
                    ts=s.ts,
                    gpu_uuid=s.gpu_uuid,
                    mig_instance=s.mig_instance,
                    gpu_index=s.gpu_index,
                    model=s.model or "",
                    util_pct=s.util_pct,
                    fb_total_mib=s.fb_total_mib,
                    power_w=s.power_w,
                    pods=tuple(PodUse(p.namespace, p.pod, p.pod_uid, p.request_id) for p in s.pods),
                )
                for s in self.samples
            ),
        )


class Attributed(BaseModel):
    request: int = Field(description="By the pod's gpupool.io/request label.")
    node: int = Field(description="By the one reservation holding the node's GPUs.")
    none: int = Field(description="Charged to no reservation.")


class IdleFlagPublic(BaseModel):
    reservation_id: int
    request_id: int
    tenant: str
    gpu_class: str
    gpus: int
    idle_since: datetime
    action: str = Field(description="none, end or reclaimable")

    @classmethod
    def of(cls, f: Flagged) -> IdleFlagPublic:
        return cls(
            reservation_id=f.reservation_id,
            request_id=f.request_id,
            tenant=f.tenant,
            gpu_class=f.gpu_class,
            gpus=f.gpus,
            idle_since=f.idle_since,
            action=f.action,
        )


class IngestPublic(BaseModel):
    received: int
    stored: int
    duplicates: int = Field(description="Already stored (a resent batch); ignored.")
    attributed: Attributed
    mismatches: int = Field(
        description="Samples whose pod named a request holding no GPUs on that node then."
    )
    idle: list[IdleFlagPublic] = Field(description="Reservations this push found idle.")

    @classmethod
    def of(cls, r: IngestResult) -> IngestPublic:
        return cls(
            received=r.received,
            stored=r.stored,
            duplicates=r.duplicates,
            attributed=Attributed(request=r.by_request, node=r.by_node, none=r.unattributed),
            mismatches=r.mismatches,
            idle=[IdleFlagPublic.of(f) for f in r.flagged],
        )


class UsageRowPublic(BaseModel):
    """One group. Only the dimensions of ``group_by`` are present."""

    tenant: str | None = None
    gpu_class: str | None = None
    reservation_id: int | None = None
    request_id: int | None = None
    gpus: int | None = None
    day: str | None = Field(None, description="UTC date, YYYY-MM-DD")
    attributed: bool = Field(
        True, description="False: measured time no reservation could be charged with."
    )
    allocated_gpu_s: float = Field(description="Reserved GPUs times open time (exact).")
    measured_gpu_s: float = Field(description="Part of the time the agents sampled.")
    used_gpu_s: float = Field(description="Measured time times utilisation.")
    idle_gpu_s: float = Field(description="Measured time below the idle threshold.")
    energy_j: float = Field(description="Measured energy, joules.")
    samples: int
    utilisation: float | None = Field(description="used / measured (0-1).")

    @classmethod
    def of(cls, line: UsageLine, *, total: bool = False) -> UsageRowPublic:
        values: dict[str, Any] = {} if total else dict(line.key)
        if not total:
            values["attributed"] = line.attributed
        for name in FIGURES:
            values[name] = getattr(line, name)
        values["utilisation"] = line.utilisation
        return cls(**values)


class UsageReportPublic(BaseModel):
    start: datetime = Field(description="Start of the range (widened to a whole hour).")
    end: datetime = Field(description="End of the range (widened to a whole hour).")
    group_by: list[str]
    rows: list[UsageRowPublic]
    totals: UsageRowPublic

    @classmethod
    def of(cls, report: UsageReport) -> UsageReportPublic:
        return cls(
            start=report.start,
            end=report.end,
            group_by=[g.value for g in report.group_by],
            rows=[UsageRowPublic.of(r) for r in report.rows],
            totals=UsageRowPublic.of(report.totals, total=True),
        )


def to_csv(report: UsageReport) -> str:
    """The report's rows as CSV with a header row: dimensions, then the figures."""
    header = [*report.columns, "attributed", *FIGURES, "utilisation"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for line in report.rows:
        util = line.utilisation
        writer.writerow(
            [
                *("" if line.key.get(c) is None else line.key[c] for c in report.columns),
                "true" if line.attributed else "false",
                *(_number(getattr(line, name)) for name in FIGURES),
                "" if util is None else f"{util:.6f}",
            ]
        )
    return out.getvalue()


def _number(value: float) -> str:
    """Whole numbers without a fraction, others to the millisecond."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
