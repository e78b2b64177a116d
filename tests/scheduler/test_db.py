"""The engine's connection handling: idle connections the server closed are replaced without a
failed request, a single-statement read leaves no autocommit behind in the pool, and SQLite
writers take turns on the write lock."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

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


@contextmanager
def _another_process_writing(url: str) -> Iterator[tuple[Any, Any]]:
    """A spawned process that holds the write lock until its ``release`` event is set (at
    the latest when the block ends); yields the process and that event."""
    ctx = multiprocessing.get_context("spawn")
    holding, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_write_lock, args=(url, holding, release))
    other.start()
    try:
        assert holding.wait(30)
        yield other, release
    finally:
        release.set()
        other.join(30)


def _copy_template(tmp_path, sqlite_template) -> str:
    path = tmp_path / "gpupool.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def test_sqlite_writers_in_other_processes_wait_their_turn(tmp_path, sqlite_template):
    """A writer in another process holds the write lock: ours waits in the kernel (no busy
    polling) and goes on as soon as the other commits."""
    url = _copy_template(tmp_path, sqlite_template)
    engine = make_engine(url)
    try:
        with _another_process_writing(url) as (_, release):
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
        engine.dispose()


def test_a_write_scope_inside_another_in_one_thread_does_not_deadlock(tmp_path, sqlite_template):
    engine = make_engine(_copy_template(tmp_path, sqlite_template))
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


def _write_one(url: str, name: str) -> None:  # in a spawned process
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.add(GpuClassRow(name=name, created_at=datetime.now(UTC)))
    engine.dispose()


def _waits_in_the_kernel(path: str, pid: int) -> bool:
    """Whether process ``pid`` is blocked on a ``flock`` of ``path`` (``/proc/locks`` lists
    a blocked request as ``-> FLOCK ... <pid> <dev>:<inode> ...``)."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as locks:
        blocked = [line.split() for line in locks if " -> FLOCK " in line]
    return any(int(f[5]) == pid and int(f[6].rsplit(":", 1)[1]) == inode for f in blocked)


def test_bulk_writes_let_writers_already_waiting_go_first(tmp_path, sqlite_template):
    """One process holds the write lock; a write that defers (a part of a cycle's plan)
    waits, and a process that asks for the lock after it still writes before it."""
    url = _copy_template(tmp_path, sqlite_template)
    engine = make_engine(url)
    lock = WriteLock.of(engine)
    assert lock is not None
    seen: list[str] = []

    def bulk() -> None:
        with session_scope(engine, defer_s=30) as session:
            seen.extend(session.execute(text("SELECT name FROM gpu_class")).scalars())

    ours = threading.Thread(target=bulk)
    second = multiprocessing.get_context("spawn").Process(target=_write_one, args=(url, "second"))
    try:
        with _another_process_writing(url) as (_, release):
            ours.start()
            time.sleep(0.5)
            assert not seen and ours.is_alive()  # the first still holds the lock
            second.start()
            deadline = time.monotonic() + 30
            while not _waits_in_the_kernel(lock.path, second.pid):  # asked after ours
                assert second.is_alive() and time.monotonic() < deadline
                time.sleep(0.01)
            release.set()
            ours.join(30)
        assert sorted(seen) == ["held", "second"]
    finally:
        second.join(30)
        engine.dispose()


def test_deferring_waits_for_this_process_s_writers_and_for_no_one_else(tmp_path, sqlite_template):
    url = _copy_template(tmp_path, sqlite_template)
    engine = make_engine(url)
    lock = WriteLock.of(engine)
    assert lock is not None
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with session_scope(engine) as session:
            session.add(GpuClassRow(name="held", created_at=datetime.now(UTC)))
            session.flush()
            holding.set()
            release.wait(30)

    done = threading.Event()

    def defer() -> None:
        lock.defer_to_waiting(30)
        done.set()

    try:
        # Nobody writes: no wait at all.
        alone = threading.Thread(target=defer)
        alone.start()
        alone.join(10)
        assert done.is_set()
        # Another thread of this process holds the lock: deferring waits until it is done.
        done.clear()
        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(30)
        waiter = threading.Thread(target=defer)
        waiter.start()
        assert not done.wait(0.5)
        release.set()
        holder.join(30)
        assert done.wait(30)
        # Inside its own write a thread does not wait for itself.
        with session_scope(engine) as outer:  # no statement yet: SQLite's lock is not taken
            started = time.monotonic()
            with session_scope(engine, defer_s=30) as inner:
                inner.add(GpuClassRow(name="inner", created_at=datetime.now(UTC)))
            assert time.monotonic() - started < 10
            outer.add(GpuClassRow(name="outer", created_at=datetime.now(UTC)))
    finally:
        release.set()
        engine.dispose()


def test_deferring_gives_up_after_its_limit_under_a_writer_that_does_not_finish(
    tmp_path, sqlite_template
):
    url = _copy_template(tmp_path, sqlite_template)
    engine = make_engine(url)
    try:
        with _another_process_writing(url) as (other, _):
            lock = WriteLock.of(engine)
            assert lock is not None
            started = time.monotonic()
            lock.defer_to_waiting(0.3)  # returns although the other process still writes
            assert time.monotonic() - started >= 0.3
            assert other.is_alive()
    finally:
        engine.dispose()
