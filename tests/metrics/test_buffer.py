"""The bounded sample buffer: nothing lost until full, then oldest dropped and counted."""

from __future__ import annotations

import pytest

from metrics.agent.buffer import SampleBuffer


def test_keeps_everything_until_full_then_drops_the_oldest() -> None:
    buf: SampleBuffer[int] = SampleBuffer(5)
    assert buf.extend(range(5)) == 0
    assert buf.extend([5, 6]) == 2
    assert buf.dropped_full == 2
    assert buf.take(10) == [2, 3, 4, 5, 6]


def test_take_is_fifo_and_capped() -> None:
    buf: SampleBuffer[int] = SampleBuffer(10)
    buf.extend(range(7))
    assert buf.take(3) == [0, 1, 2]
    assert (len(buf), buf.pending) == (4, 7)  # Three in flight still count as pending.
    buf.acknowledge([0, 1, 2])
    assert buf.pending == 4


def test_a_failed_batch_goes_back_to_the_front_in_order() -> None:
    buf: SampleBuffer[int] = SampleBuffer(10)
    buf.extend(range(4))
    batch = buf.take(3)
    buf.extend([4, 5])  # Sampling goes on during the push.
    assert buf.put_back(batch) == 0
    assert buf.take(10) == [0, 1, 2, 3, 4, 5]


def test_put_back_drops_only_the_overflow_oldest_first() -> None:
    buf: SampleBuffer[int] = SampleBuffer(5)
    buf.extend(range(5))
    batch = buf.take(4)  # [0, 1, 2, 3] in flight, [4] buffered
    buf.extend([5, 6, 7])  # Buffer [4, 5, 6, 7]: room for one more.
    assert buf.put_back(batch) == 3
    assert buf.dropped_full == 3
    assert buf.take(10) == [3, 4, 5, 6, 7]


def test_put_back_into_a_full_buffer_drops_the_whole_batch() -> None:
    buf: SampleBuffer[int] = SampleBuffer(2)
    buf.extend([0, 1])
    batch = buf.take(2)
    buf.extend([2, 3])
    assert buf.put_back(batch) == 2
    assert buf.take(5) == [2, 3]


def test_rejected_batches_are_counted_separately() -> None:
    buf: SampleBuffer[int] = SampleBuffer(5)
    buf.extend(range(3))
    buf.reject(buf.take(2))
    assert (buf.dropped_rejected, buf.dropped_full, buf.pending) == (2, 0, 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="buffer capacity must be at least 1, got 0"):
        SampleBuffer(0)
