"""Faults the fake API server injects: error codes, slow answers, dropped watch streams."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One fault, hitting the next ``times`` requests that match.

    ``path`` is a regular expression searched in the request path; ``method`` ``None`` matches
    any method; ``watch`` ``True``/``False`` restricts it to watch or non-watch requests.
    ``status``: answer with this HTTP error instead of serving the request. ``delay``: sleep
    first (longer than the client's timeout, it is a timeout); with ``apply`` the request is
    still carried out afterwards, like a write whose answer was lost. ``drop_after``: for a
    watch, cut the connection without a proper end after this many events. ``expire``: for a
    watch, answer with an ERROR event carrying 410 Gone at once, as when the resume point
    was compacted away.
    """

    path: str = ""
    method: str | None = None
    watch: bool | None = None
    status: int | None = None
    delay: float = 0.0
    apply: bool = True
    drop_after: int | None = None
    expire: bool = False
    times: int = 1
    hits: int = field(default=0, init=False)


class FaultPlan:
    """The faults queued on a server; thread-safe, first match wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, is_watch: bool) -> Fault | None:
        """The fault for this request, counting it as used; ``None`` when none applies."""
        with self._lock:
            for fault in self._faults:
                if fault.hits >= fault.times:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if fault.watch is not None and fault.watch != is_watch:
                    continue
                if fault.path and not re.search(fault.path, path):
                    continue
                fault.hits += 1
                return fault
            return None
