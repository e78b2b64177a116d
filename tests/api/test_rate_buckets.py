"""The rate limit's bucket table: one bucket per key, shared by the processes of a server."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from api.limits import BucketTable, RateLimiter
from scheduler.errors import RateLimited


def _drain(table: BucketTable, key: str, now: float, out: object) -> None:
    """In another process: take tokens from ``key`` until refused; report how many."""
    taken = 0
    while table.take(key, now, 1.0, 10.0) == 0.0:
        taken += 1
    out.value = taken  # type: ignore[attr-defined]


def test_processes_draw_on_one_bucket_per_key() -> None:
    ctx = multiprocessing.get_context("spawn")
    table = BucketTable(context=ctx)
    now = time.monotonic()
    assert table.take("key:a", now, 1.0, 10.0) == 0.0  # this process takes the first token
    taken = ctx.Value("i", -1)
    child = ctx.Process(target=_drain, args=(table, "key:a", now, taken))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert taken.value == 9  # the other process found the bucket one token short
    assert table.take("key:a", now, 1.0, 10.0) == pytest.approx(1.0)  # empty here too
    assert table.take("key:b", now, 1.0, 10.0) == 0.0  # another key has its own bucket


def test_many_keys_each_get_their_own_bucket() -> None:
    table = BucketTable(slots=4096)
    now = 100.0
    keys = [f"key:{i:012x}" for i in range(1000)]
    for _ in range(3):
        assert all(table.take(k, now, 0.5, 3.0) == 0.0 for k in keys)
    waits = [table.take(k, now, 0.5, 3.0) for k in keys]
    assert all(w == pytest.approx(2.0) for w in waits)  # each bucket is empty, alone
    # half a token a second: two seconds later each key has exactly one again
    assert all(table.take(k, now + 2.0, 0.5, 3.0) == 0.0 for k in keys)
    assert all(table.take(k, now + 2.0, 0.5, 3.0) > 0 for k in keys)


@pytest.mark.parametrize("trial", range(8))  # other names land on other slots
def test_a_full_table_gives_the_slot_refilled_longest_ago(trial: int) -> None:
    table = BucketTable(slots=2)
    old, busy, new = (f"key:{name}-{trial}" for name in ("old", "busy", "new"))
    table.take(old, 0.0, 1.0, 2.0)
    for _ in range(2):
        table.take(busy, 10.0, 1.0, 2.0)
    assert table.take(busy, 10.0, 1.0, 2.0) > 0  # busy is empty
    assert table.take(new, 10.0, 1.0, 2.0) == 0.0  # takes old's slot, not busy's
    assert table.take(busy, 10.0, 1.0, 2.0) > 0  # still empty: its bucket was kept


def test_the_limiter_says_when_to_retry() -> None:
    now = [50.0]
    limiter = RateLimiter(2.0, 4.0, clock=lambda: now[0])
    for _ in range(4):
        limiter.check("key:a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("key:a")
    assert refused.value.retry_after_s == 1
    now[0] += 0.5  # one token back
    limiter.check("key:a")
    off = RateLimiter(0.0, 1.0)  # 0 turns the limit off
    for _ in range(100):
        off.check("key:a")
