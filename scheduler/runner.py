"""Runs cycles in a background thread: on events (debounced), at the next planned start or
window end, on a timer, and when another replica asks. The solve happens here, off the API's
event loop.

With a :class:`~scheduler.leader.LeaderLease`, only the replica holding the lease runs cycles;
a heartbeat thread renews it (or tries to take it) every third of its time-to-live.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from scheduler.clock import Clock
from scheduler.cycle import CycleResult, NotLeader, PlanFn, run_cycle
from scheduler.leader import LeaderLease
from scheduler.settings import Settings

log = logging.getLogger(__name__)


class CycleRunner:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        *,
        lease: LeaderLease | None = None,
        on_result: Callable[[CycleResult], None] | None = None,
        plan_fn: PlanFn | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self.lease = lease
        self._plan_fn = plan_fn
        self._listeners: list[Callable[[CycleResult], None]] = [on_result] if on_result else []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._next_event: datetime | None = None
        self._last_started_wall = datetime.fromtimestamp(0, UTC)
        self._last_started_mono = 0.0
        self._last_ended_mono = 0.0
        self._last_duration_s = 0.0
        self._became_leader = threading.Event()
        self.last_result: CycleResult | None = None
        self.running_since: datetime | None = None
        self.cycles = 0
        self.failures = 0

    @property
    def is_leader(self) -> bool:
        return self.lease is None or self.lease.term is not None

    def trigger(self, reason: str = "") -> None:
        """Ask for a cycle soon (after the debounce); cheap and thread-safe. On a follower the
        request goes to the leader through the database."""
        log.debug("cycle requested: %s", reason)
        self._wake.set()
        if self.lease is not None and not self.is_leader:
            self.lease.request_replan()

    def run_once(self) -> CycleResult:
        """Run one cycle in the calling thread (tests, the simulator, the loop below)."""
        fence = self.lease.fence if self.lease is not None else None
        with self._lock:
            self._last_started_wall = datetime.now(UTC)
            self._last_started_mono = time.monotonic()
            self.running_since = self._last_started_wall
            self._mark(self.running_since)
            try:
                if self._plan_fn is None:
                    result = run_cycle(self._engine, self._settings, self._clock, fence=fence)
                else:
                    result = run_cycle(
                        self._engine,
                        self._settings,
                        self._clock,
                        fence=fence,
                        plan_fn=self._plan_fn,
                    )
            finally:
                self.running_since = None
                self._mark(None)
                self._last_ended_mono = time.monotonic()
                self._last_duration_s = self._last_ended_mono - self._last_started_mono
            self.cycles += 1
            self.last_result = result
            self._next_event = result.next_event
        for listener in self._listeners:
            try:
                listener(result)
            except Exception:  # a listener (metrics, the controller) must not stop cycles
                log.exception("cycle listener failed")
        return result

    def _mark(self, since: datetime | None) -> None:
        if self.lease is None or self.lease.term is None:
            return
        try:
            self.lease.mark_cycle(since)
        except Exception:  # only informational; the cycle goes on
            log.debug("could not mark the cycle on the lease", exc_info=True)

    def add_listener(self, listener: Callable[[CycleResult], None]) -> None:
        """Call ``listener`` with every cycle's result (metrics, waking the controller)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._loop, name="gpupool-cycle", daemon=True)]
        if self.lease is not None:
            self._threads.append(
                threading.Thread(target=self._heartbeat, name="gpupool-lease", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        if self.lease is not None:
            try:
                self.lease.release()
            except Exception:
                log.warning("could not release the leader lease", exc_info=True)

    def _heartbeat(self) -> None:
        assert self.lease is not None
        interval = self.lease.ttl.total_seconds() / 3
        while not self._stop.is_set():
            was = self.is_leader
            try:
                now_leader = self.lease.acquire_or_renew()
            except Exception:
                log.warning("lease renewal failed", exc_info=True)
                self.lease.term = None
                now_leader = False
            if now_leader and not was:
                log.info("this replica (%s) now runs the cycles", self.lease.identity)
                self._became_leader.set()
                self._wake.set()
            elif was and not now_leader:
                log.warning("this replica lost the leader lease")
            self._stop.wait(interval)

    def _due(self) -> bool:
        """A cycle is due without a local trigger: the timer, a planned event, or a request
        from another replica."""
        if time.monotonic() - self._last_started_mono >= self._settings.cycle_interval_s:
            return True
        if self._next_event is not None and self._clock.now() >= self._next_event:
            return True
        if self.lease is not None:
            try:
                return self.lease.replan_requested_after(self._last_started_wall)
            except Exception:
                return False
        return False

    def _timeout(self) -> float:
        wait = self._settings.cycle_interval_s
        if self._next_event is not None:
            until = (self._next_event - self._clock.now()).total_seconds()
            wait = min(wait, max(until, 0.0) + 0.05)
        if self.lease is not None:
            wait = min(wait, 1.0)  # poll for other replicas' requests
        return wait

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            woke = self._wake.wait(self._timeout())
            if self._stop.is_set():
                break
            if not self.is_leader:
                self._wake.clear()
                continue
            if not (woke or self._became_leader.is_set() or self._due()):
                continue
            self._became_leader.clear()
            if woke and self._settings.cycle_debounce_s > 0:
                # Let a burst of submits land before planning them together.
                self._stop.wait(self._settings.cycle_debounce_s)
            # Under a steady stream of events, leave the API at least as much time as the
            # last cycle took (and never less than the configured gap).
            gap = max(self._settings.cycle_min_gap_s, self._last_duration_s)
            rest = self._last_ended_mono + gap - time.monotonic()
            if rest > 0:
                self._stop.wait(rest)
            self._wake.clear()
            try:
                self.run_once()
                backoff = 1.0
            except NotLeader:
                log.warning("cycle abandoned: the lease was lost during the cycle")
            except Exception:
                self.failures += 1
                log.exception("cycle failed; retrying in %.0f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
