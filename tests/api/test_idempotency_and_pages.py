"""Idempotent submits and keyset pagination."""

from __future__ import annotations

import threading

from tests.api.helpers import make_pool, make_tenant, ok

BODY = {"gpu_class": "H100-80GB", "gpus": 4, "duration": 3600}


def test_retry_with_same_key_returns_first_request(op, engine):
    make_pool(op)
    acme = make_tenant(op, "acme")
    headers = {**acme, "Idempotency-Key": "job-42"}
    first = op.post("/v1/requests", json=BODY, headers=headers)
    assert first.status_code == 201
    again = op.post("/v1/requests", json=BODY, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(ok(op.get("/v1/requests", headers=acme))["items"]) == 1


def test_same_key_different_body_is_refused(op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    headers = {**acme, "Idempotency-Key": "job-42"}
    ok(op.post("/v1/requests", json=BODY, headers=headers), 201)
    r = op.post("/v1/requests", json={**BODY, "gpus": 8}, headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(ok(op.get("/v1/requests", headers=acme))["items"]) == 1


def test_keys_are_per_tenant(op):
    make_pool(op)
    acme = make_tenant(op, "acme")
    rival = make_tenant(op, "rival")
    a = ok(op.post("/v1/requests", json=BODY, headers={**acme, "Idempotency-Key": "k"}), 201)
    b = ok(op.post("/v1/requests", json=BODY, headers={**rival, "Idempotency-Key": "k"}), 201)
    assert a["id"] != b["id"]


def test_concurrent_retries_create_one_request(op, app):
    make_pool(op)
    acme = make_tenant(op, "acme")
    headers = {**acme, "Idempotency-Key": "burst"}
    codes: list[int] = []
    ids: set[int] = set()
    lock = threading.Lock()

    def fire() -> None:
        r = op.post("/v1/requests", json=BODY, headers=headers)
        with lock:
            codes.append(r.status_code)
            if r.status_code < 300:
                ids.add(r.json()["id"])

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 7 + [201]
    assert len(ids) == 1


def test_pages_cover_everything_once(op):
    make_pool(op)
    acme = make_tenant(op, "acme", limit=16)
    made = [ok(op.post("/v1/requests", json=BODY, headers=acme), 201)["id"] for _ in range(7)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = ok(op.get("/v1/requests", params=params, headers=acme))
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == sorted(made, reverse=True)

    names = []
    cursor = None
    for i in range(5):
        ok(op.post("/v1/tenants", json={"name": f"t{i}"}), 201)
    while True:
        page = ok(
            op.get("/v1/tenants", params={"limit": 2} | ({"cursor": cursor} if cursor else {}))
        )
        names += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == sorted(["acme", "t0", "t1", "t2", "t3", "t4"])
