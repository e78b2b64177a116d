"""Transactions PostgreSQL rolls back to resolve a conflict (deadlock, serialisation) are
retried; other database errors are not; a conflict that persists is a 503 that says so."""

from __future__ import annotations

import psycopg.errors
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from api import errors
from api.retry import ATTEMPTS, RetryRoute, is_transient


class Body(BaseModel):
    n: int


def app_failing(times: int, error: Exception) -> tuple[FastAPI, list[int]]:
    calls: list[int] = []
    router = APIRouter(route_class=RetryRoute)

    @router.post("/thing")
    def thing(body: Body) -> dict[str, int]:
        calls.append(body.n)
        if len(calls) <= times:
            raise OperationalError("UPDATE request ...", {}, error)
        return {"n": body.n, "attempts": len(calls)}

    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    return app, calls


def test_a_deadlock_is_retried_with_the_same_body():
    app, calls = app_failing(2, psycopg.errors.DeadlockDetected("deadlock detected"))
    r = TestClient(app).post("/thing", json={"n": 7})
    assert r.status_code == 200, r.text
    assert r.json() == {"n": 7, "attempts": 3}
    assert calls == [7, 7, 7]


def test_a_persistent_conflict_is_a_503_that_says_so():
    app, calls = app_failing(99, psycopg.errors.SerializationFailure("could not serialize"))
    r = TestClient(app, raise_server_exceptions=False).post("/thing", json={"n": 1})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert "conflicted with concurrent updates" in r.json()["detail"]
    assert len(calls) == ATTEMPTS


def test_a_lost_connection_is_not_retried():
    app, calls = app_failing(99, psycopg.OperationalError("connection refused"))
    r = TestClient(app, raise_server_exceptions=False).post("/thing", json={"n": 1})
    assert r.status_code == 503
    assert "unreachable" in r.json()["detail"]
    assert len(calls) == 1


def test_is_transient_reads_the_sqlstate_class():
    wrap = lambda e: OperationalError("x", {}, e)  # noqa: E731
    assert is_transient(wrap(psycopg.errors.DeadlockDetected("d")))
    assert is_transient(wrap(psycopg.errors.SerializationFailure("s")))
    assert not is_transient(wrap(psycopg.errors.UniqueViolation("u")))
    assert not is_transient(ValueError("not a database error"))
