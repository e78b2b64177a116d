"""An async load driver for a running gpupool server: tenants submit, poll and cancel.

Used by ``gpupool bench api`` (the long run, numbers for the README) and by the test suite
(a short run with assertions). It records every acknowledged submit so a caller can check
afterwards that none was lost or duplicated.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from api.loadclient import Connection, LoadClientError

#: The status recorded for a request that got no answer at all.
NO_ANSWER = 599


@dataclass
class OpStats:
    latencies_s: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, seconds: float, code: int) -> None:
        self.latencies_s.append(seconds)
        self.codes[code] += 1

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        data = sorted(self.latencies_s)
        return data[min(len(data) - 1, int(q * len(data)))]


@dataclass
class LoadResult:
    duration_s: float
    ops: dict[str, OpStats]
    acknowledged: dict[int, str]  # request id -> tenant
    cancelled: set[int]
    errors: list[str]
    last_submit_at: float = 0.0

    @property
    def server_errors(self) -> int:
        """Answers with a 5xx status."""
        return sum(
            n for s in self.ops.values() for code, n in s.codes.items() if 500 <= code < NO_ANSWER
        )

    @property
    def unanswered(self) -> int:
        """Requests that got no answer (connection failed, or no response within the timeout)."""
        return sum(s.codes.get(NO_ANSWER, 0) for s in self.ops.values())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"duration_s": round(self.duration_s, 2)}
        total = sum(len(s.latencies_s) for s in self.ops.values())
        out["requests"] = total
        out["throughput_rps"] = round(total / self.duration_s, 1) if self.duration_s else 0.0
        for name, s in sorted(self.ops.items()):
            out[name] = {
                "count": len(s.latencies_s),
                "rate_per_s": round(len(s.latencies_s) / self.duration_s, 1),
                "p50_ms": round(s.percentile(0.50) * 1000, 1),
                "p99_ms": round(s.percentile(0.99) * 1000, 1),
                "mean_ms": round(statistics.fmean(s.latencies_s) * 1000, 1) if s.latencies_s else 0,
                "codes": dict(sorted(s.codes.items())),
            }
        out["server_errors"] = self.server_errors
        out["unanswered"] = self.unanswered
        out["acknowledged"] = len(self.acknowledged)
        return out


async def _tenant(
    http: Connection,
    name: str,
    key: str,
    result: LoadResult,
    stop_at: float,
    rng: random.Random,
    gpu_class: str,
    think_s: float,
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    mine: list[int] = []
    n = 0
    while time.monotonic() < stop_at:
        roll = rng.random()
        op = "submit" if roll < 0.5 or not mine else ("poll" if roll < 0.9 else "cancel")
        t0 = time.monotonic()
        try:
            if op == "submit":
                n += 1
                body = {
                    "gpu_class": gpu_class,
                    "gpus": rng.choice([1, 1, 2, 4, 8]),
                    "duration": rng.choice([600, 1800, 3600, 4 * 3600]),
                    "name": f"{name}-{n}",
                }
                idem = {"Idempotency-Key": f"{name}-{n}"}
                r = await http.post("/v1/requests", json=body, headers=headers | idem)
                if r.status_code in (200, 201):
                    rid = r.json()["id"]
                    previous = result.acknowledged.get(rid)
                    if previous is not None and previous != name:
                        result.errors.append(f"request id {rid} given to {previous} and {name}")
                    result.acknowledged[rid] = name
                    mine.append(rid)
                    result.last_submit_at = time.monotonic()
            elif op == "poll":
                r = await http.get(f"/v1/requests/{rng.choice(mine)}", headers=headers)
            else:
                rid = mine.pop(rng.randrange(len(mine)))
                r = await http.post(f"/v1/requests/{rid}/cancel", headers=headers)
                if r.status_code == 200:
                    result.cancelled.add(rid)
            result.ops[op].add(time.monotonic() - t0, r.status_code)
            if r.status_code >= 500:
                result.errors.append(f"{op} -> {r.status_code}: {r.text[:200]}")
        except LoadClientError as exc:
            result.ops[op].add(time.monotonic() - t0, NO_ANSWER)
            result.errors.append(f"{op} -> {exc}")
        if think_s:
            await asyncio.sleep(rng.uniform(0, 2 * think_s))


async def run_load(
    base_url: str,
    keys: dict[str, str],
    *,
    seconds: float,
    gpu_class: str = "H100-80GB",
    seed: int = 0,
    think_s: float = 0.0,
) -> LoadResult:
    """Every tenant of ``keys`` runs its own loop for ``seconds``, on its own connection."""
    result = LoadResult(0.0, defaultdict(OpStats), {}, set(), [])
    names = sorted(keys)
    conns = [Connection(base_url) for _ in names]
    start = time.monotonic()
    stop_at = start + seconds
    try:
        await asyncio.gather(
            *(
                _tenant(
                    conn,
                    name,
                    keys[name],
                    result,
                    stop_at,
                    random.Random(seed * 1000 + i),
                    gpu_class,
                    think_s,
                )
                for i, (name, conn) in enumerate(zip(names, conns, strict=True))
            )
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    result.duration_s = time.monotonic() - start
    return result
