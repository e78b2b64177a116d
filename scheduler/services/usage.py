"""Usage samples from the node agents: deduplicated, attributed to reservations, aggregated.

Storage: a sample is folded into an hourly bucket per (node, reservation) as it arrives
(:class:`~scheduler.tables.UsageBucketRow`); raw samples are not kept. A pool of 1,000 GPUs
sampled every 10 s sends 8.6 M samples a day but makes about 3,000 bucket rows a day (one per
node and reservation an hour), so the store needs no retention job. Per-GPU time series are
the node agents' Prometheus metrics.

Delivery is at least once, in order per device: the newest accepted ``ts`` of each GPU or MIG
instance is its cursor, and a sample at or before it is a duplicate. A sample stands for the
``interval_s`` seconds before its ``ts``, capped by the gap since the device's previous sample
(so a restarted agent does not count time twice) and clipped to the reservation's window.
A gap in samples counts as unmeasured, never as idle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Table, func
from sqlmodel import Session, col, select

from scheduler import idle
from scheduler.db import insert_for
from scheduler.domain import Principal, ReservationState
from scheduler.errors import InvalidInput
from scheduler.settings import Settings
from scheduler.tables import (
    NodeRow,
    ReservationNodeRow,
    ReservationRow,
    UsageBucketRow,
    UsageDeviceRow,
)

#: Length of one accounting bucket. Part of the storage format: reports are exact to it.
BUCKET_S = 3600
#: ``mig_key`` of a whole GPU (MIG instance ids start at 0).
WHOLE_GPU = -1
_BUCKET_TABLE: Table = UsageBucketRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class PodUse:
    """A container using a device, as the agent saw it."""

    namespace: str | None
    pod: str | None
    pod_uid: str | None
    request_id: int | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One device's reading at ``ts`` (see the push contract in the agent's notes)."""

    ts: datetime
    gpu_uuid: str
    mig_instance: int | None = None
    gpu_index: int | None = None
    model: str = ""
    util_pct: float | None = None
    fb_total_mib: int | None = None
    power_w: float | None = None
    pods: tuple[PodUse, ...] = ()

    @property
    def device(self) -> tuple[str, int]:
        return self.gpu_uuid, WHOLE_GPU if self.mig_instance is None else self.mig_instance


@dataclass(frozen=True, slots=True)
class Batch:
    node: str
    interval_s: float
    samples: tuple[Sample, ...]


@dataclass(slots=True)
class IngestResult:
    """What one push did; the API answers it and the metrics count it."""

    received: int
    stored: int = 0
    duplicates: int = 0
    by_request: int = 0
    by_node: int = 0
    unattributed: int = 0
    mismatches: int = 0
    flagged: list[idle.Flagged] = field(default_factory=list)

    @property
    def replan(self) -> bool:
        """Whether an idle action changed what the plan may use."""
        return any(f.action in ("end", "reclaimable") for f in self.flagged)


@dataclass(frozen=True, slots=True)
class Holding:
    """A reservation's GPUs on the pushing node, and the time they were held."""

    reservation_id: int
    request_id: int
    tenant: str
    gpu_class: str
    gpus_here: int
    start: datetime
    until: datetime

    def covers(self, ts: datetime) -> bool:
        """A sample at ``ts`` measures time before it, so ``(start, until]``."""
        return self.start < ts <= self.until


@dataclass(frozen=True, slots=True)
class Attribution:
    holdings: tuple[Holding, ...]
    how: str  # "request", "node" or "none"
    mismatch: bool = False
    #: The device runs pods that no reservation here accounts for.
    foreign: bool = False


def attribute(sample: Sample, here: list[Holding], node_gpus: int | None) -> Attribution:
    """Who a sample is charged to.

    By the pods' ``gpupool.io/request`` label when that request holds GPUs on this node at
    ``ts`` (a label that does not match is counted and not trusted); else the one reservation
    holding GPUs on the node then, if it holds the whole node or the device runs only its
    tenant's unlabelled pods (a free GPU beside a smaller reservation is nobody's); else none.
    """
    by_request = {h.request_id: h for h in here}
    claimed = {p.request_id for p in sample.pods if p.request_id is not None}
    valid = tuple(sorted((by_request[r] for r in claimed if r in by_request), key=_rid))
    mismatch = len(valid) < len(claimed)
    if valid:
        return Attribution(valid, "request", mismatch)
    if len(here) == 1:
        only = here[0]
        whole_node = node_gpus is not None and only.gpus_here >= node_gpus
        own_pods = bool(sample.pods) and all(
            p.request_id is None and p.namespace == only.tenant for p in sample.pods
        )
        if whole_node or own_pods:
            return Attribution((only,), "node", mismatch)
    return Attribution((), "none", mismatch, foreign=bool(sample.pods))


def _rid(h: Holding) -> int:
    return h.reservation_id


def bucket_of(t: datetime) -> datetime:
    """Start of the accounting bucket containing ``t`` (aligned to whole UTC hours)."""
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % BUCKET_S, t.tzinfo)


def split_by_bucket(a: datetime, b: datetime) -> Iterable[tuple[datetime, float]]:
    """``[a, b)`` cut at bucket boundaries: (bucket start, seconds in it)."""
    while a < b:
        start = bucket_of(a)
        cut = min(b, start + timedelta(seconds=BUCKET_S))
        yield start, (cut - a).total_seconds()
        a = cut


@dataclass(slots=True)
class _Figures:
    tenant: str
    gpu_class: str
    samples: int = 0
    measured_gpu_s: float = 0.0
    used_gpu_s: float = 0.0
    idle_gpu_s: float = 0.0
    energy_j: float = 0.0


class _Buckets:
    """Bucket deltas of one batch, written with one upsert per key."""

    def __init__(self, node: str, idle_below_pct: float) -> None:
        self.node = node
        self.idle_below = idle_below_pct
        self.deltas: dict[tuple[datetime, int], _Figures] = {}

    def add(
        self,
        sample: Sample,
        reservation_id: int,
        tenant: str,
        gpu_class: str,
        a: datetime,
        gpu_share: float,
    ) -> None:
        """Charge ``gpu_share`` GPUs of ``sample`` over ``[a, sample.ts)``."""
        key = (bucket_of(sample.ts - timedelta(microseconds=1)), reservation_id)
        self._get(key, tenant, gpu_class).samples += 1
        util = sample.util_pct
        for start, seconds in split_by_bucket(a, sample.ts):
            f = self._get((start, reservation_id), tenant, gpu_class)
            gpu_s = seconds * gpu_share
            if util is not None:
                f.measured_gpu_s += gpu_s
                f.used_gpu_s += gpu_s * util / 100.0
                if util < self.idle_below:
                    f.idle_gpu_s += gpu_s
            if sample.power_w is not None:
                f.energy_j += sample.power_w * gpu_s

    def _get(self, key: tuple[datetime, int], tenant: str, gpu_class: str) -> _Figures:
        f = self.deltas.get(key)
        if f is None:
            f = self.deltas[key] = _Figures(tenant, gpu_class)
        return f

    def write(self, session: Session) -> None:
        if not self.deltas:
            return
        rows = [
            {
                "bucket_start": start,
                "node": self.node,
                "reservation_id": rid,
                "tenant": f.tenant,
                "gpu_class": f.gpu_class,
                "samples": f.samples,
                "measured_gpu_s": f.measured_gpu_s,
                "used_gpu_s": f.used_gpu_s,
                "idle_gpu_s": f.idle_gpu_s,
                "energy_j": f.energy_j,
            }
            for (start, rid), f in sorted(self.deltas.items())
        ]
        stmt = insert_for(session)(_BUCKET_TABLE)
        added = ("samples", "measured_gpu_s", "used_gpu_s", "idle_gpu_s", "energy_j")
        stmt = stmt.on_conflict_do_update(
            index_elements=["bucket_start", "node", "reservation_id"],
            set_={name: _BUCKET_TABLE.c[name] + stmt.excluded[name] for name in added},
        )
        session.execute(stmt, rows)


def _holdings(session: Session, node: str, lo: datetime, hi: datetime) -> list[Holding]:
    """Reservations holding GPUs on ``node`` at some time in ``(lo, hi]``."""
    held_until = func.coalesce(ReservationRow.ended_at, ReservationRow.end)
    rows = session.exec(
        select(ReservationRow, ReservationNodeRow.gpus)
        .join(ReservationNodeRow, col(ReservationNodeRow.reservation_id) == col(ReservationRow.id))
        .where(
            ReservationNodeRow.node == node,
            col(ReservationRow.state).in_(
                [ReservationState.ACTIVE.value, ReservationState.ENDED.value]
            ),
            col(ReservationRow.start) < hi,
            held_until >= lo,
        )
    ).all()
    out = []
    for r, gpus in rows:
        until = min(r.end, r.ended_at) if r.ended_at is not None else r.end
        out.append(Holding(r.id or 0, r.request_id, r.tenant, r.gpu_class, gpus, r.start, until))
    return out


def _devices(
    session: Session, node: str, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], UsageDeviceRow]:
    """The node's device rows for ``keys`` (and their GPUs' other MIG instances), locked."""
    uuids = sorted({u for u, _ in keys})
    rows = session.exec(
        select(UsageDeviceRow)
        .where(UsageDeviceRow.node == node, col(UsageDeviceRow.gpu_uuid).in_(uuids))
        .with_for_update()
    ).all()
    return {(r.gpu_uuid, r.mig_key): r for r in rows}


def _mig_shares(
    devices: Iterable[UsageDeviceRow], fresh_after: datetime
) -> dict[tuple[str, int], float]:
    """Each MIG instance's share of its GPU: its memory over the memory of the GPU's instances
    seen lately (equal shares where memory is unknown). Whole GPUs count 1."""
    instances: dict[str, list[UsageDeviceRow]] = defaultdict(list)
    shares: dict[tuple[str, int], float] = {}
    for d in devices:
        if d.mig_key == WHOLE_GPU:
            shares[(d.gpu_uuid, d.mig_key)] = 1.0
        elif d.last_ts >= fresh_after:
            instances[d.gpu_uuid].append(d)
    for uuid, group in instances.items():
        memory = [d.fb_total_mib for d in group]
        total = sum(m for m in memory if m)
        for d in group:
            if total and all(memory):
                shares[(uuid, d.mig_key)] = (d.fb_total_mib or 0) / total
            else:
                shares[(uuid, d.mig_key)] = 1.0 / len(group)
    return shares


def _check(batch: Batch, now: datetime, settings: Settings) -> None:
    ahead = now + timedelta(seconds=settings.usage_max_skew_s)
    for i, s in enumerate(batch.samples):
        if s.ts > ahead:
            raise InvalidInput.field(
                f"samples.{i}.ts",
                f"{s.ts.isoformat()} is more than {settings.usage_max_skew_s:.0f} s ahead of "
                f"the server's clock ({now.isoformat()}); check the node's time sync",
            )


def ingest(
    session: Session, who: Principal, now: datetime, settings: Settings, batch: Batch
) -> IngestResult:
    """Store one push of samples from ``batch.node``: skip duplicates, attribute the rest,
    fold them into the buckets, follow idle reservations, and act on those found idle.
    ``who`` is the pushing agent (or the operator); the API has checked its role."""
    _check(batch, now, settings)
    result = IngestResult(received=len(batch.samples))
    if not batch.samples:
        return result
    interval = batch.interval_s
    ordered = sorted(batch.samples, key=lambda s: (s.device, s.ts))
    devices = _devices(session, batch.node, {s.device for s in ordered})
    node = session.get(NodeRow, batch.node)
    node_class = node.gpu_class if node is not None else ""
    hi = max(s.ts for s in ordered)
    lo = min(s.ts for s in ordered) - timedelta(seconds=interval)
    holdings = _holdings(session, batch.node, lo, hi)

    # Pass 1: drop duplicates, find each sample's weight, refresh the device rows.
    fresh: list[tuple[Sample, float]] = []
    for s in ordered:
        d = devices.get(s.device)
        if d is not None and s.ts <= d.last_ts:
            result.duplicates += 1
            continue
        gap = interval if d is None else (s.ts - d.last_ts).total_seconds()
        fresh.append((s, min(interval, gap)))
        if d is None:
            d = devices[s.device] = UsageDeviceRow(
                node=batch.node,
                gpu_uuid=s.gpu_uuid,
                mig_key=s.device[1],
                interval_s=interval,
                last_ts=s.ts,
                updated_at=now,
            )
        d.last_ts, d.interval_s, d.updated_at = s.ts, interval, now
        d.gpu_index, d.model, d.fb_total_mib = s.gpu_index, s.model, s.fb_total_mib
    shares = _mig_shares(devices.values(), hi - timedelta(seconds=10 * interval))

    # Pass 2: attribute and charge.
    buckets = _Buckets(batch.node, settings.idle_util_pct)
    passes = idle.Passes(settings.idle_util_pct)
    for s, weight in fresh:
        here = [h for h in holdings if h.covers(s.ts)]
        charged = attribute(s, here, node.gpus if node is not None else None)
        share = shares.get(s.device, 1.0)
        result.stored += 1
        result.mismatches += int(charged.mismatch)
        passes.saw(s.ts, here, charged, s.util_pct)
        if charged.how == "none":
            result.unattributed += 1
            buckets.add(s, 0, "", node_class, s.ts - timedelta(seconds=weight), share)
        else:
            if charged.how == "request":
                result.by_request += 1
            else:
                result.by_node += 1
            split = share / len(charged.holdings)
            for h in charged.holdings:
                a = max(s.ts - timedelta(seconds=weight), h.start)
                buckets.add(s, h.reservation_id, h.tenant, h.gpu_class, a, split)
        d = devices[s.device]
        d.util_pct, d.share = s.util_pct, share
        first = charged.holdings[0] if charged.holdings else None
        d.reservation_id = first.reservation_id if first else 0
        d.tenant = first.tenant if first else ""
        d.gpu_class = first.gpu_class if first else node_class
    for d in devices.values():
        session.add(d)
    buckets.write(session)
    result.flagged = idle.follow(session, now, settings, batch.node, interval, passes)
    session.flush()
    return result
