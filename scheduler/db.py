"""Database engine and sessions: SQLite by default (WAL, foreign keys on), PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Session, create_engine

from scheduler import heap


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and gives them back aware, on SQLite and PostgreSQL alike.

    SQLite has no time zone type; PostgreSQL's ``timestamptz`` has one. Normalising here keeps
    comparisons in Python honest on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` with the pragmas and pool settings gpupool relies on."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that
            # BEGIN IMMEDIATE below takes the write lock at the start of a write transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A write transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred
            # one that reads first and writes later can fail with SQLITE_BUSY under WAL when
            # another writer committed in between, and busy_timeout does not cover that case.
            immediate = conn.get_execution_options().get("gpupool_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    engine = create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_timeout=10)

    @event.listens_for(engine, "checkout")
    def _drop_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        # A pre-ping without the round trip (pool_pre_ping costs one per transaction): an idle
        # connection has nothing to read, so a readable socket means the server closed it or
        # said it will (a restart, an idle timeout, a cut proxy). The pool then connects anew.
        if dbapi_conn.closed or _readable(dbapi_conn.fileno()):
            raise DisconnectionError("the database closed this idle connection")

    return engine


def _readable(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def insert_for(session: Session) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL alike)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"gpupool supports SQLite and PostgreSQL, not {name}")


#: Advisory lock keys (PostgreSQL): one number per kind of writer that must take turns.
PLAN_WINDOWS_LOCK = 0x6770_7077  # a cycle's plan writes and window extensions


def take_turns(session: Session, key: int) -> None:
    """Wait until no other transaction holds ``key``, and hold it until this one ends.

    PostgreSQL only (an advisory lock): SQLite lets one writer in at a time anyway. Taken
    as a transaction's last lock, it cannot close a cycle of waits with the row locks.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@contextmanager
def read_once(engine: Engine) -> Iterator[Connection]:
    """A connection for a single read statement, outside a transaction where the database
    allows it: on PostgreSQL that saves the BEGIN and COMMIT round trips. (SQLite keeps its
    cheap local transaction; its isolation level is left as :func:`make_engine` set it.)"""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@contextmanager
def session_scope(engine: Engine, *, write: bool = True, defer_s: float = 0.0) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error.

    ``write=False`` is for read-only work: on SQLite it does not take the write lock. A
    write scope on an SQLite file first waits its turn on :class:`WriteLock`; with
    ``defer_s`` (bulk work done in parts) it first lets the writers already waiting go
    ahead, waiting for them at most that long.
    """
    bind = engine.execution_options(gpupool_write=write)
    lock = WriteLock.of(engine) if write else None
    if lock is not None and defer_s > 0:
        lock.defer_to_waiting(defer_s)
    # The session opens before the lock and closes after it (returning its connection to
    # the pool), so the lock covers the transaction only.
    with Session(bind, expire_on_commit=False) as session, lock or nullcontext():
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class WriteLock:
    """Takes SQLite write transactions in turn, across the threads and processes that share a
    database file, with a lock the kernel hands on (``flock`` on ``<database>-writelock``).

    SQLite lets one writer in at a time; the others poll in its busy handler, which sleeps up
    to 100 ms between tries, so under a steady stream of writes some wait far longer than the
    writes ahead of them take. Here a waiter wakes as soon as the writer before it is done.
    Re-entrant within a thread; a process that dies lets go with its file descriptor.

    Bulk work written in parts (a cycle's plan) lets waiting writers go first: a process
    holds a shared ``flock`` on ``<database>-writers`` while any of its threads waits for or
    holds the lock, and :meth:`defer_to_waiting` waits until an exclusive one could be
    taken there. Without it the kernel hands the lock to each waiting process in turn, so
    while a cycle wrote its parts (15-40 ms each) an API process got one submit in per part
    (measured: submits queued 100-700 ms behind an apply of 0.3-1 s at 300 submits/s).
    """

    _by_path: ClassVar[dict[str, WriteLock]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: int | None = None
        self._fds: _Files | None = None
        self._pid = 0
        self._wanting = 0  # this process's threads waiting for or holding the lock
        self._wanting_lock = threading.Lock()

    @classmethod
    def of(cls, engine: Engine) -> WriteLock | None:
        """The lock of ``engine``'s database, if it is an SQLite file."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        path = os.path.abspath(url.database) + "-writelock"
        with cls._registry_lock:
            lock = cls._by_path.get(path)
            if lock is None:
                lock = cls._by_path[path] = cls(path)
            return lock

    def __enter__(self) -> WriteLock:
        me = threading.get_ident()
        first = self._owner != me
        if first:
            self._want(+1)
        self._lock.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._files().lock, fcntl.LOCK_EX)
                heap.pause()  # a collection now would stop every writer of the database
                self._owner = me
            self._depth += 1
        except BaseException:
            self._lock.release()
            if first:
                self._want(-1)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fds is not None:
                self._owner = None
                fcntl.flock(self._fds.lock, fcntl.LOCK_UN)
                heap.resume()
                self._want(-1)
        finally:
            self._lock.release()

    def defer_to_waiting(self, most_s: float) -> None:
        """Wait until no writer of any process waits for or holds the lock, at most
        ``most_s`` seconds (so bulk work still goes on under a steady stream of writes)."""
        if self._owner == threading.get_ident():
            return  # inside this thread's own write: the waiting one would be ourselves
        probe = self._files().probe
        deadline = time.monotonic() + most_s
        while True:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(DEFER_POLL_S)
                continue
            fcntl.flock(probe, fcntl.LOCK_UN)
            return

    def _want(self, delta: int) -> None:
        with self._wanting_lock:
            before, self._wanting = self._wanting, self._wanting + delta
            if before == 0:
                fcntl.flock(self._files().writers, fcntl.LOCK_SH)
            elif self._wanting == 0:
                fcntl.flock(self._files().writers, fcntl.LOCK_UN)

    def _files(self) -> _Files:
        # Descriptors per process: a forked child must not share its parent's (a flock
        # belongs to the open file, so parent and child would both "hold" it).
        if self._fds is None or self._pid != os.getpid():
            writers = self.path.removesuffix("-writelock") + "-writers"
            self._fds = _Files(
                lock=os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600),
                writers=os.open(writers, os.O_RDWR | os.O_CREAT, 0o600),
                probe=os.open(writers, os.O_RDWR | os.O_CREAT, 0o600),
            )
            self._pid = os.getpid()
        return self._fds


@dataclass(frozen=True, slots=True)
class _Files:
    """One process's open files of a :class:`WriteLock`."""

    lock: int  # the write lock itself
    writers: int  # held shared while this process has writers waiting or writing
    probe: int  # a second open file of the same: asks whether anyone waits


#: How often :meth:`WriteLock.defer_to_waiting` looks again.
DEFER_POLL_S = 0.001
