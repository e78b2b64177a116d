"""Runs cycles in a background thread: on events (debounced), at the next planned start or
window end, and on a timer. The solve happens here, off the API's event loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from scheduler.clock import Clock
from scheduler.cycle import CycleResult, run_cycle
from scheduler.settings import Settings

log = logging.getLogger(__name__)


class CycleRunner:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        *,
        on_result: Callable[[CycleResult], None] | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._on_result = on_result
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next_event: datetime | None = None
        self.last_result: CycleResult | None = None
        self.cycles = 0
        self.failures = 0

    def trigger(self, reason: str = "") -> None:
        """Ask for a cycle soon (after the debounce); cheap and thread-safe."""
        log.debug("cycle requested: %s", reason)
        self._wake.set()

    def run_once(self) -> CycleResult:
        """Run one cycle in the calling thread (tests, the simulator, the loop below)."""
        with self._lock:
            result = run_cycle(self._engine, self._settings, self._clock)
            self.cycles += 1
            self.last_result = result
            self._next_event = result.next_event
        if self._on_result is not None:
            self._on_result(result)
        return result

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gpupool-cycle", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _timeout(self) -> float:
        wait = self._settings.cycle_interval_s
        if self._next_event is not None:
            until = (self._next_event - self._clock.now()).total_seconds()
            wait = min(wait, max(until, 0.0) + 0.05)
        return wait

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            woke = self._wake.wait(self._timeout())
            if self._stop.is_set():
                break
            if woke and self._settings.cycle_debounce_s > 0:
                # Let a burst of submits land before planning them together.
                self._stop.wait(self._settings.cycle_debounce_s)
            self._wake.clear()
            try:
                self.run_once()
                backoff = 1.0
            except Exception:
                self.failures += 1
                log.exception("cycle failed; retrying in %.0f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
