"""The scheduler in its own process: cycles, the leader lease and the controller.

``gpupool serve`` runs the API in its main process and this in a child, so that planning
(Python work that holds the interpreter lock) never competes with the API for a core. The
API wakes it through a shared flag; other replicas reach the leader through the database.
The child exits when its parent dies, so a killed server never leaves a scheduler behind
holding the lease.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from scheduler import heap
from scheduler.clock import SystemClock
from scheduler.db import make_engine
from scheduler.leader import LeaderLease, replica_identity
from scheduler.runner import CycleRunner
from scheduler.settings import Settings

log = logging.getLogger(__name__)


class WakeFlag:
    """A wake-up that API processes raise on every submit and the scheduler child polls
    (every :data:`POLL_S`): one byte of shared memory, without a lock.

    Not a multiprocessing ``Event``: setting one hands the wake-up to the thread waiting on
    it and blocks until that thread, in the lower-priority scheduler process and behind the
    planner for its interpreter lock, has taken it; at 300 submits/s the API's threads
    queued on that hand-over for 40-110 ms whenever a cycle was snapshotting or planning.

    A raise between :meth:`take`'s read and its reset is absorbed, which loses nothing: that
    API process committed its write before raising, and the cycle the scheduler asks for
    after :meth:`take` reads the database later still."""

    def __init__(self, context: Any) -> None:
        self._flag = context.RawValue(ctypes.c_ubyte, 0)

    def set(self) -> None:
        self._flag.value = 1

    def take(self) -> bool:
        """Whether the flag was raised since the last take (and lower it)."""
        if not self._flag.value:
            return False
        self._flag.value = 0
        return True


#: How often the scheduler child looks at the wake flag (cycles wait a debounce anyway).
POLL_S = 0.05


@dataclass
class RemoteScheduler:
    """The API process's handle on its scheduler child."""

    identity: str
    wake: WakeFlag
    process: Any = None

    def trigger(self) -> None:
        self.wake.set()


def run(settings: Settings, identity: str, wake: WakeFlag, parent_pid: int, log_level: str) -> None:
    """The child's main: run cycles (when leading) and the controller until told to stop."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from api.app import start_controller
    from api.deps import AppContext
    from metrics.server import ServerMetrics

    if settings.scheduler_nice:
        os.nice(settings.scheduler_nice)
    engine = make_engine(settings.database_url)
    clock = SystemClock()
    lease = LeaderLease(engine, identity, ttl_s=settings.lease_ttl_s)
    metrics = ServerMetrics(engine, clock, settings, state=False)
    runner = CycleRunner(engine, settings, clock, lease=lease, on_result=metrics.observe_cycle)
    metrics.runner = runner
    ctx = AppContext(settings=settings, engine=engine, clock=clock, runner=runner)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    controller = start_controller(ctx) if settings.controller else None
    runner.start()
    runner.trigger("startup")
    if settings.scheduler_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.scheduler_metrics_port, settings.host, metrics.registry)

    def forward_wakes() -> None:
        while not stop.wait(POLL_S):
            if wake.take():
                runner.trigger("api")

    threading.Thread(target=forward_wakes, name="gpupool-wake", daemon=True).start()
    heap.freeze_startup()
    log.info("scheduler process %s started (replica %s)", os.getpid(), identity)
    while not stop.wait(0.5):
        if os.getppid() != parent_pid:  # the API process is gone: so are we
            log.warning("the server process died; the scheduler stops")
            break
    runner.stop()
    if controller is not None:
        controller.stop()
    engine.dispose()


def spawn(settings: Settings, log_level: str, wake: WakeFlag | None = None) -> RemoteScheduler:
    """Start the scheduler child and return the API's handle on it. A restarted child keeps
    the ``wake`` flag of the one it replaces: the API processes hold that one."""
    context = multiprocessing.get_context("spawn")
    handle = RemoteScheduler(identity=replica_identity(), wake=wake or WakeFlag(context))
    handle.process = context.Process(
        target=run,
        args=(settings, handle.identity, handle.wake, os.getpid(), log_level),
        name="gpupool-scheduler",
    )
    handle.process.start()
    return handle


def supervise(
    handle: RemoteScheduler, settings: Settings, log_level: str, stop: threading.Event
) -> None:
    """Restart the scheduler child if it dies while the API runs (with a growing pause)."""
    pause = 1.0
    while not stop.wait(1.0):
        process = handle.process
        if process is None or process.is_alive():
            continue
        log.error(
            "the scheduler process exited with %s; restarting it in %.0f s", process.exitcode, pause
        )
        if stop.wait(pause):
            return
        fresh = spawn(settings, log_level, handle.wake)
        handle.process = fresh.process
        handle.identity = fresh.identity
        pause = min(pause * 2, 60.0)
