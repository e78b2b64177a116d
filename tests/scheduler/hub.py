"""A small hub on simulated time, driven through the real API and the real cycle."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from scheduler.clock import ManualClock
from tests.api.helpers import ok
from tests.invariants import plan_violations


class Hub:
    def __init__(self, op: TestClient, clock: ManualClock, cycle: Any, engine: Any) -> None:
        self.op = op
        self.clock = clock
        self._cycle = cycle
        self.engine = engine
        self.keys: dict[str, dict[str, str]] = {}
        self.cycles = 0
        self.interval = timedelta(seconds=30)
        self.next_event: datetime | None = None

    # set-up -----------------------------------------------------------------------------
    def pool(self, gpu_class: str, nodes: int, gpus: int = 8, prefix: str = "node") -> None:
        ok(self.op.post("/v1/gpu-classes", json={"name": gpu_class}), 201)
        for i in range(nodes):
            body = {"name": f"{prefix}-{i}", "gpu_class": gpu_class, "gpus": gpus}
            ok(self.op.post("/v1/nodes", json=body), 201)

    def tenant(self, name: str, quotas: dict[str, dict[str, Any]], **fields: Any) -> None:
        ok(self.op.post("/v1/tenants", json={"name": name, **fields}), 201)
        for cls, quota in quotas.items():
            ok(self.op.put(f"/v1/tenants/{name}/quotas/{cls}", json=quota))
        key = ok(self.op.post(f"/v1/tenants/{name}/api-keys", json={}), 201)["token"]
        self.keys[name] = {"Authorization": f"Bearer {key}"}

    # tenant actions ---------------------------------------------------------------------
    def submit(self, tenant: str, **body: Any) -> int:
        body.setdefault("gpu_class", "H100-80GB")
        r = ok(self.op.post("/v1/requests", json=body, headers=self.keys[tenant]), 201)
        return int(r["id"])

    def get(self, rid: int) -> dict[str, Any]:
        return ok(self.op.get(f"/v1/requests/{rid}"))  # type: ignore[no-any-return]

    def state(self, rid: int) -> str:
        return str(self.get(rid)["state"])

    def post(self, tenant: str, path: str, body: Any = None) -> Any:
        return self.op.post(path, json=body, headers=self.keys[tenant])

    # time -------------------------------------------------------------------------------
    def cycle(self) -> Any:
        result = self._cycle()
        self.cycles += 1
        self.next_event = result.next_event
        violations = plan_violations(self.engine)
        assert violations == [], violations
        return result

    def run_until(self, when: datetime) -> None:
        """Behave like the runner: a cycle at every planned event and at least every
        ``interval``, until ``when``."""
        while self.clock.now() < when:
            step = self.clock.now() + self.interval
            if self.next_event is not None and self.next_event > self.clock.now():
                step = min(step, self.next_event)
            self.clock.set(min(step, when))
            self.cycle()

    def run_for(self, **delta: float) -> None:
        self.run_until(self.clock.now() + timedelta(**delta))
