"""More than one API process on one port: ``gpupool serve --workers N``.

One Python process answers requests on one core at most (the interpreter lock). With
``--workers N`` the server runs N API processes that share the listening port through
``SO_REUSEPORT`` (the kernel spreads connections over them) and one scheduler child that runs
the cycles and the controller (:mod:`api.scheduler_process`). Every API process wakes the
scheduler through the same shared flag, and through the database as any replica does.

The first API process is ``gpupool serve`` itself; it starts the others and the scheduler,
restarts any that die, and stops them all when it stops. The others exit when it dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.synchronize import Event as EventType
from typing import TYPE_CHECKING, Any

from api.limits import BucketTable
from scheduler import heap
from scheduler.settings import Settings

if TYPE_CHECKING:
    from api.scheduler_process import WakeFlag

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """A listening TCP socket; ``shared``: other processes may bind to the same port."""
    if shared and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers above 1 needs SO_REUSEPORT, which this platform lacks")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_on(app: Any, sock: socket.socket, log_level: str) -> None:
    """Run uvicorn on an already bound socket until it is told to stop; returns after a
    graceful shutdown (from the main thread: it installs signal handlers)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)
    heap.freeze_startup()  # later full collections walk only what requests leave behind
    # After a graceful shutdown on SIGTERM or SIGINT, uvicorn raises the signal again for the
    # handler it found installed; the default one would kill this process before its caller
    # stops the other processes and releases what it holds. This one only asks uvicorn to
    # stop (which also covers a signal that comes before uvicorn installs its own).
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in STOP_SIGNALS}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(
    settings: Settings,
    identity: str,
    wake: WakeFlag,
    parent_pid: int,
    log_level: str,
    rate_buckets: BucketTable,
    listening: EventType,
) -> None:
    """An extra API process: the app without cycles or controller, on the shared port;
    ``listening`` is set once its socket takes connections."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from api.app import create_app
    from api.scheduler_process import RemoteScheduler

    def watch_parent() -> None:
        # The first API process is gone (killed, crashed): stop as uvicorn stops on SIGTERM.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        log.warning("the server process died; API worker %s stops", os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="gpupool-parent-watch", daemon=True).start()
    app = create_app(
        settings,
        upgrade_db=False,
        scheduler=RemoteScheduler(identity=identity, wake=wake),
        rate_buckets=rate_buckets,
    )
    sock = listening_socket(settings.host, settings.port)
    listening.set()  # connections wait in the socket's backlog until uvicorn accepts them
    serve_on(app, sock, log_level)


class ApiWorkers:
    """The extra API processes of one server: started, restarted when they die, stopped."""

    def __init__(
        self, count: int, settings: Settings, identity: str, wake: WakeFlag, log_level: str
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        #: The rate limit's buckets, shared by every API process (the first one included).
        self.rate_buckets = BucketTable(context=self._context)
        self._args = (settings, identity, wake, os.getpid(), log_level, self.rate_buckets)
        self._listening = [self._context.Event() for _ in range(count)]
        self.processes: list[Any] = [self._start(i) for i in range(count)]

    def _start(self, index: int) -> Any:
        process = self._context.Process(
            target=_worker,
            args=(*self._args, self._listening[index]),
            name=f"gpupool-api-{index + 2}",
        )
        process.start()
        return process

    def wait_listening(self, timeout: float) -> bool:
        """Wait until every API process listens on the port; False if some did not in time.

        The first API process starts answering only after this: connections opened before
        the others listen would all stay with it (keep-alive), whatever the kernel does
        with later ones."""
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._listening)

    def supervise(self, stop: threading.Event) -> None:
        """Restart an API process that died while the server runs (with a growing pause)."""
        pause = 1.0
        while not stop.wait(1.0):
            for i, process in enumerate(self.processes):
                if process.is_alive():
                    continue
                log.error(
                    "API process %s exited with %s; restarting it in %.0f s",
                    process.pid,
                    process.exitcode,
                    pause,
                )
                if stop.wait(pause):
                    return
                self.processes[i] = self._start(i)
                pause = min(pause * 2, 60.0)

    def stop(self, timeout: float = 20.0) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
