"""Keeping Python's cyclic garbage collector out of the latency tail.

A full collection walks every object the process holds: 50-160 ms in a server process on a
slow core, during which its requests stop; if the process holds SQLite's write lock then,
every other writer of the database stops too. Two remedies:

- :func:`freeze_startup` moves what exists after start-up (modules, the app, the engine) out
  of the collector's sight, so later full collections walk only what came since;
- :func:`pause` / :func:`resume` keep the collector from starting while a short critical
  section runs (it runs at its next chance afterwards, outside).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_pausing = 0
_was_enabled = True


def freeze_startup() -> None:
    """Collect once, then exempt every object alive now from later collections."""
    gc.collect()
    gc.freeze()


def pause() -> None:
    """No automatic collection starts in this process until every :func:`pause` is matched
    by a :func:`resume` (threads may overlap)."""
    global _pausing, _was_enabled
    with _lock:
        if _pausing == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausing += 1


def resume() -> None:
    global _pausing
    with _lock:
        _pausing -= 1
        if _pausing == 0 and _was_enabled:
            gc.enable()
