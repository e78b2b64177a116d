"""Pushing samples to a loopback receiver: delivery, outages, back-off, rejections."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from metrics.agent.attribution import PodUse
from metrics.agent.buffer import SampleBuffer
from metrics.agent.push import Backoff, Pusher, PushOutcome, fixed_token, token_from_file
from metrics.agent.samples import UsageSample
from tests.metrics.fakes import Receiver

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def sample(i: int) -> UsageSample:
    return UsageSample(
        ts=AT + timedelta(seconds=10 * i),
        gpu_uuid="GPU-a",
        gpu_index=0,
        model="NVIDIA H100 80GB HBM3",
        mig_instance=None,
        util_pct=float(i % 100),
        fb_used_mib=1024,
        fb_total_mib=81559,
        power_w=312.5,
        temp_c=61,
        pods=(
            PodUse(
                pod_uid="u-1",
                namespace="acme",
                pod="train-0",
                container="main",
                request_id=42,
                used_bytes=1000 * 1024 * 1024,
            ),
        ),
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def pusher(
    buffer: SampleBuffer[UsageSample],
    receiver: Receiver,
    client: httpx.Client,
    batch_size: int = 500,
    token: str | None = "agent-secret",
) -> Pusher:
    return Pusher(
        buffer,
        receiver.url + "/",
        "gpu-node-1",
        10.0,
        fixed_token(token),
        client,
        batch_size=batch_size,
        backoff=Backoff(initial_s=1, max_s=60, rng=random.Random(7)),
        wall_clock=lambda: 1_800_000_000.0,
    )


def test_samples_arrive_with_token_and_the_documented_body(
    receiver: Receiver, client: httpx.Client
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(100)
    buf.extend([sample(0)])
    p = pusher(buf, receiver, client)
    assert p.push_pending() is PushOutcome.SENT
    [request] = receiver.requests
    assert request.path == "/v1/usage/samples"
    assert request.headers["authorization"] == "Bearer agent-secret"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "node": "gpu-node-1",
        "interval_s": 10.0,
        "samples": [
            {
                "ts": "2026-11-22T10:00:00Z",
                "gpu_uuid": "GPU-a",
                "gpu_index": 0,
                "model": "NVIDIA H100 80GB HBM3",
                "mig_instance": None,
                "util_pct": 0.0,
                "fb_used_mib": 1024,
                "fb_total_mib": 81559,
                "power_w": 312.5,
                "temp_c": 61,
                "pods": [
                    {
                        "namespace": "acme",
                        "pod": "train-0",
                        "container": "main",
                        "pod_uid": "u-1",
                        "request_id": 42,
                        "used_mib": 1000,
                    }
                ],
            }
        ],
    }
    assert (p.pushed, p.failures, p.last_success, buf.pending) == (1, 0, 1_800_000_000.0, 0)


def test_no_token_means_no_authorization_header(receiver: Receiver, client: httpx.Client) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    buf.extend([sample(0)])
    pusher(buf, receiver, client, token=None).push_once()
    assert "authorization" not in receiver.requests[0].headers


def test_batches_are_capped_and_the_backlog_drained_in_order(
    receiver: Receiver, client: httpx.Client
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(5000)
    buf.extend(sample(i) for i in range(1203))
    p = pusher(buf, receiver, client, batch_size=500)
    assert p.push_pending() is PushOutcome.SENT
    assert [len(r.body["samples"]) for r in receiver.requests] == [500, 500, 203]
    sent = [s["ts"] for s in receiver.samples]
    assert sent == [sample(i).to_json()["ts"] for i in range(1203)]
    assert p.pushed == 1203


def test_an_outage_loses_nothing_while_the_buffer_has_room(
    receiver: Receiver, client: httpx.Client
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(1000)
    p = pusher(buf, receiver, client, batch_size=50)
    buf.extend(sample(i) for i in range(10))
    assert p.push_pending() is PushOutcome.SENT
    receiver.stop()  # The server goes away: connection refused.
    for i in range(10, 130):
        buf.extend([sample(i)])
        if i % 10 == 0:
            assert p.push_pending() is PushOutcome.RETRY
    assert p.failures == 12 and buf.pending == 120 and buf.dropped_full == 0
    receiver.start()  # Back on the same port.
    assert p.push_pending() is PushOutcome.SENT
    assert [s["ts"] for s in receiver.samples] == [sample(i).to_json()["ts"] for i in range(130)]
    assert buf.pending == 0


def test_a_long_outage_drops_the_oldest_and_counts_them(
    receiver: Receiver, client: httpx.Client
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(100)
    p = pusher(buf, receiver, client, batch_size=30)
    receiver.statuses = [503] * 5
    for i in range(250):
        buf.extend([sample(i)])
        if i % 50 == 49:
            p.push_pending()
    assert buf.dropped_full == 150
    assert p.push_pending() is PushOutcome.SENT
    # Exactly the newest 100 arrive, in order.
    assert [s["ts"] for s in receiver.samples] == [
        sample(i).to_json()["ts"] for i in range(150, 250)
    ]


def test_server_errors_are_retried_not_dropped(receiver: Receiver, client: httpx.Client) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    buf.extend([sample(0), sample(1)])
    p = pusher(buf, receiver, client)
    for status in (500, 502, 503, 429, 401, 403, 404):
        receiver.statuses = [status]
        assert p.push_once() is PushOutcome.RETRY, status
        assert buf.pending == 2
    assert p.push_once() is PushOutcome.SENT
    assert len(receiver.samples) == 2


@pytest.mark.parametrize("status", [400, 422])
def test_an_invalid_batch_is_dropped_and_counted(
    receiver: Receiver, client: httpx.Client, status: int
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    buf.extend([sample(0), sample(1), sample(2)])
    p = pusher(buf, receiver, client, batch_size=2)
    receiver.statuses = [status]
    assert p.push_pending() is PushOutcome.SENT  # The rest still goes through.
    assert buf.dropped_rejected == 2
    assert [s["ts"] for s in receiver.samples] == [sample(2).to_json()["ts"]]


def test_payload_too_large_halves_the_batch(receiver: Receiver, client: httpx.Client) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(100)
    buf.extend(sample(i) for i in range(8))
    p = pusher(buf, receiver, client, batch_size=8)
    receiver.statuses = [413, 413]
    assert p.push_pending() is PushOutcome.RETRY
    assert p.push_pending() is PushOutcome.RETRY
    assert p.batch_size == 2
    assert p.push_pending() is PushOutcome.SENT
    assert [len(r.body["samples"]) for r in receiver.requests if r.status == 200] == [2] * 4


def test_backoff_grows_is_capped_and_resets() -> None:
    backoff = Backoff(initial_s=1, max_s=60, factor=2, jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_jitter_stays_within_bounds() -> None:
    backoff = Backoff(initial_s=10, max_s=1000, jitter=0.2, rng=random.Random(1))
    delays = []
    for _ in range(50):
        backoff.reset()
        delays.append(backoff.next_delay())
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 1


def test_retry_after_sets_the_next_wait(receiver: Receiver, client: httpx.Client) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    buf.extend([sample(0)])
    p = pusher(buf, receiver, client)
    receiver.statuses = [(503, {"Retry-After": "45"})]
    outcome = p.push_pending()
    assert p.next_delay(outcome, interval_s=15) == 45
    # Success: back to the normal interval.
    assert p.next_delay(p.push_pending(), interval_s=15) == 15


def test_run_pushes_on_its_interval_and_flushes_on_stop(
    receiver: Receiver, client: httpx.Client
) -> None:
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    p = pusher(buf, receiver, client)
    stop = threading.Event()
    buf.extend([sample(0)])
    stop.set()  # Stopped before the first interval: the final flush still delivers.
    p.run(stop, interval_s=3600)
    assert len(receiver.samples) == 1


def test_token_file_is_read_at_every_push(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("first\n")
    buf: SampleBuffer[UsageSample] = SampleBuffer(10)
    p = Pusher(buf, receiver.url, "n", 10.0, token_from_file(token_path), client)
    buf.extend([sample(0)])
    p.push_once()
    token_path.write_text("rotated")
    buf.extend([sample(1)])
    p.push_once()
    token_path.unlink()
    buf.extend([sample(2)])
    p.push_once()
    assert [r.headers.get("authorization") for r in receiver.requests] == [
        "Bearer first",
        "Bearer rotated",
        None,
    ]
