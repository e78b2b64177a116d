"""Tenants' quotas for a simulation: one GPU class, a guaranteed share and a limit per tenant.

- ``proportional`` (default): guaranteed GPUs ∝ the tenant's GPU-hours in the trace, whole
  GPUs summing to the pool (largest remainders), limit = the pool (idle GPUs may be borrowed).
- ``equal``: the pool split evenly (largest remainders by tenant name), limit = the pool.
- a FILE, JSON or CSV:

  * JSON: ``{"tenant": {"guaranteed": 128, "limit": 512}, ...}`` or ``{"tenant": 128, ...}``;
  * CSV with header ``tenant,guaranteed[,limit]``.

  A missing ``limit`` means the pool; a tenant of the trace the file does not name gets
  guaranteed 0 (it only borrows). Guarantees may not total more than the pool.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


class QuotaError(ValueError):
    """The quotas cannot be used; the message names the tenant or field."""


@dataclass(frozen=True, slots=True)
class TenantQuota:
    guaranteed: int
    limit: int


def _largest_remainder(shares: Mapping[str, float], total: int) -> dict[str, int]:
    """Whole numbers proportional to ``shares`` summing to ``total`` (ties by name)."""
    weight = sum(shares.values())
    if weight <= 0:
        shares = {t: 1.0 for t in shares}
        weight = float(len(shares))
    exact = {t: total * s / weight for t, s in shares.items()}
    out = {t: math.floor(v) for t, v in exact.items()}
    rest = total - sum(out.values())
    for t in sorted(exact, key=lambda t: (-(exact[t] - out[t]), t))[:rest]:
        out[t] += 1
    return out


def proportional(demand_gpu_s: Mapping[str, float], pool: int) -> dict[str, TenantQuota]:
    return {t: TenantQuota(g, pool) for t, g in _largest_remainder(demand_gpu_s, pool).items()}


def equal(tenants: Iterable[str], pool: int) -> dict[str, TenantQuota]:
    return {
        t: TenantQuota(g, pool)
        for t, g in _largest_remainder(dict.fromkeys(tenants, 1.0), pool).items()
    }


def _whole(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuotaError(f"{where}: must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise QuotaError(f"{where}: must be a whole number, got {value!r}") from None
    if number != int(number) or number < 0:
        raise QuotaError(f"{where}: must be a whole number ≥ 0, got {value!r}")
    return int(number)


def from_file(path: str | Path, tenants: Iterable[str], pool: int) -> dict[str, TenantQuota]:
    path = Path(path)
    if not path.is_file():
        raise QuotaError(f"quotas: no such file: {path}")
    raw: dict[str, tuple[object, object]] = {}
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QuotaError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise QuotaError(f"{path}: must be a JSON object of tenant -> quota")
        for tenant, q in data.items():
            if isinstance(q, dict):
                unknown = set(q) - {"guaranteed", "limit"}
                if unknown or "guaranteed" not in q:
                    raise QuotaError(
                        f"{path}: tenant {tenant!r}: expected keys guaranteed[, limit], "
                        f"got {sorted(q)}"
                    )
                raw[tenant] = (q["guaranteed"], q.get("limit"))
            else:
                raw[tenant] = (q, None)
    else:
        reader = csv.DictReader(text.splitlines())
        if "tenant" not in (reader.fieldnames or []) or "guaranteed" not in (
            reader.fieldnames or []
        ):
            raise QuotaError(f"{path}: header: expected tenant,guaranteed[,limit]")
        for row in reader:
            tenant = (row.get("tenant") or "").strip()
            if not tenant:
                raise QuotaError(f"{path}: row {reader.line_num}: tenant: empty")
            raw[tenant] = (row.get("guaranteed"), row.get("limit") or None)
    out: dict[str, TenantQuota] = {}
    for tenant, (g, limit) in raw.items():
        where = f"{path}: tenant {tenant!r}"
        guaranteed = _whole(g, f"{where}: guaranteed")
        top = pool if limit is None else _whole(limit, f"{where}: limit")
        if top < guaranteed:
            raise QuotaError(f"{where}: limit ({top}) is below guaranteed ({guaranteed})")
        out[tenant] = TenantQuota(guaranteed, min(top, pool))
    total = sum(q.guaranteed for q in out.values())
    if total > pool:
        raise QuotaError(f"{path}: guaranteed quotas total {total} GPUs, the pool has {pool}")
    for tenant in tenants:
        out.setdefault(tenant, TenantQuota(0, pool))
    return out


def make_quotas(spec: str, demand_gpu_s: Mapping[str, float], pool: int) -> dict[str, TenantQuota]:
    """Quotas from ``spec`` (``proportional``, ``equal`` or a file path) for the trace's
    tenants, whose GPU-seconds of demand are ``demand_gpu_s``."""
    if spec == "proportional":
        return proportional(demand_gpu_s, pool)
    if spec == "equal":
        return equal(sorted(demand_gpu_s), pool)
    return from_file(spec, sorted(demand_gpu_s), pool)
