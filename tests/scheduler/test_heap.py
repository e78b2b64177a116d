"""The collector stays off while a process holds SQLite's write lock, and comes back after."""

from __future__ import annotations

import gc
import threading

from scheduler import heap
from scheduler.db import make_engine, session_scope


def test_pause_nests_across_threads_and_restores_the_collector():
    assert gc.isenabled()
    heap.pause()
    inner = threading.Thread(target=lambda: (heap.pause(), heap.resume()))
    inner.start()
    inner.join()
    assert not gc.isenabled()  # the other thread's resume leaves this pause standing
    heap.resume()
    assert gc.isenabled()


def test_pause_keeps_a_collector_that_was_off_off():
    gc.disable()
    try:
        heap.pause()
        heap.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_no_collection_while_the_write_lock_is_held(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'heap.db'}")
    try:
        with session_scope(engine) as s:
            s.connection()  # BEGIN IMMEDIATE: this process writes now
            assert not gc.isenabled()
        assert gc.isenabled()
        with session_scope(engine, write=False):  # readers take no lock
            assert gc.isenabled()
    finally:
        engine.dispose()


def test_freeze_startup_hides_what_exists_from_later_collections():
    gc.unfreeze()
    before = gc.get_freeze_count()
    try:
        heap.freeze_startup()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
