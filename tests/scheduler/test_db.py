"""The engine's connection handling: idle connections the server closed are replaced without a
failed request, a single-statement read leaves no autocommit behind in the pool, and SQLite
writers take turns on the write lock."""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from scheduler.db import WriteLock, make_engine, read_once, session_scope
from scheduler.tables import GpuClassRow


@pytest.mark.postgres
def test_a_connection_the_server_closed_is_replaced_at_checkout(pg_url):
    engine = make_engine(pg_url)
    admin = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # The pooled connection, idle now, is ended by the server (as on a restart).
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
        time.sleep(0.2)  # the server's goodbye reaches the idle socket
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


def test_read_once_then_a_failed_write_still_rolls_back(engine):
    with read_once(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_class")).scalar_one() == 0
    # The pool hands out the same connection: it must be transactional again.
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(GpuClassRow(name="H100-80GB", created_at=datetime.now(UTC)))
        session.flush()
        raise RuntimeError("the request failed after its first write")
    with read_once(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM gpu_class")).scalar_one() == 0


def _hold_write_lock(url: str, holding, release) -> None:  # in a spawned process
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.add(GpuClassRow(name="held", created_at=datetime.now(UTC)))
        session.flush()
        holding.set()
        release.wait(30)
    engine.dispose()


def test_sqlite_writers_in_other_processes_wait_their_turn(tmp_path, sqlite_template):
    """A writer in another process holds the write lock: ours waits in the kernel (no busy
    polling) and goes on as soon as the other commits."""
    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    ctx = multiprocessing.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_write_lock, args=(url, holding, release))
    other.start()
    engine = make_engine(url)
    try:
        assert holding.wait(30)
        lock = WriteLock.of(engine)
        assert lock is not None
        took = threading.Event()

        def write() -> None:
            with session_scope(engine) as session:
                took.set()
                n = session.execute(text("SELECT count(*) FROM gpu_class")).scalar_one()
                assert n == 1  # the other's row: it committed before we began

        ours = threading.Thread(target=write)
        ours.start()
        assert not took.wait(0.5)  # still the other's turn
        release.set()
        ours.join(30)
        assert took.is_set() and not ours.is_alive()
    finally:
        release.set()
        other.join(30)
        engine.dispose()


def test_a_write_scope_inside_another_in_one_thread_does_not_deadlock(tmp_path, sqlite_template):
    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    done = threading.Event()

    def nested() -> None:
        with session_scope(engine) as outer:  # no statement yet: SQLite's lock is not taken
            with session_scope(engine) as inner:
                inner.add(GpuClassRow(name="A100-80GB", created_at=datetime.now(UTC)))
            outer.add(GpuClassRow(name="H100-80GB", created_at=datetime.now(UTC)))
        done.set()

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(30)
    try:
        assert done.is_set()
        with read_once(engine) as conn:
            assert conn.execute(text("SELECT count(*) FROM gpu_class")).scalar_one() == 2
    finally:
        engine.dispose()
