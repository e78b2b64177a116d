"""Shared fixtures: databases (SQLite file and PostgreSQL), a manual clock, the API app.

PostgreSQL tests use ``GPUPOOL_TEST_POSTGRES_URL`` (default: the local server on
127.0.0.1:5432, user postgres). Each test run creates a fresh database and drops it at the end.
Where no PostgreSQL answers, those tests are skipped with a message, except under CI
(``CI`` set), where that is an error.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import SQLModel

from scheduler import migrate
from scheduler.clock import ManualClock
from scheduler.db import make_engine
from scheduler.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "GPUPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OPERATOR_TOKEN = "test-operator-token-0123456789"
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run."""
    admin = make_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({exc.__class__.__name__})"
        if _in_ci():
            pytest.fail(message + "; CI requires the PostgreSQL tests")
        pytest.skip(message + ": PostgreSQL tests skipped")
    name = f"gpupool_test_{uuid.uuid4().hex[:12]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate_all(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A clean, migrated database: an SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        path = tmp_path / "gpupool.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The run's PostgreSQL database, emptied for this test."""
    engine = make_engine(pg_database)
    _truncate_all(engine)
    engine.dispose()
    return pg_database


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        operator_token=OPERATOR_TOKEN,  # type: ignore[arg-type]
        resolution_s=60,
        min_runtime_s=600,
        # The planner returns its best plan at the time limit; tests plan tiny pools, where a
        # short limit loses nothing and keeps the suite fast.
        solver_time_limit_s=0.3,
    )


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: ManualClock) -> Any:
    from api.app import create_app

    return create_app(settings, engine=engine, clock=clock, run_cycles=False, upgrade_db=False)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


@pytest.fixture
def op(client: TestClient) -> TestClient:
    """The test client authenticated as the operator."""
    client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
    return client


@pytest.fixture
def cycle(app: Any) -> Callable[[], Any]:
    """Run one scheduling cycle now (cycles do not run by themselves in these tests)."""
    return app.state.ctx.runner.run_once  # type: ignore[no-any-return]
