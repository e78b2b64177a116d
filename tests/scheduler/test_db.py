"""The engine's connection handling: idle connections the server closed are replaced without a
failed request, and a single-statement read leaves no autocommit behind in the pool."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from scheduler.db import make_engine, read_once, session_scope
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
