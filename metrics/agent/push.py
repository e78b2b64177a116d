"""Pushes buffered usage samples to the gpupool server: ``POST {server}/v1/usage/samples``.

Batches are capped; a failed push puts its batch back and the next try waits with
exponential back-off (with jitter, so a fleet of agents does not retry in lock-step after a
server restart), honouring ``Retry-After``. Only a batch the server declares invalid (400,
422) is dropped, and counted, since sending it again cannot succeed.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from metrics.agent.buffer import SampleBuffer
from metrics.agent.samples import UsageSample, batch_body

log = logging.getLogger(__name__)

SAMPLES_PATH = "/v1/usage/samples"
# Answers that mean "this body will never be accepted"; anything else may pass later.
_INVALID = frozenset({400, 422})


class PushOutcome(enum.Enum):
    """What one attempt achieved."""

    EMPTY = "empty"  # nothing to send
    SENT = "sent"  # the server accepted the batch
    RETRY = "retry"  # failed; the batch is back in the buffer
    REJECTED = "rejected"  # the server refused the batch as invalid; dropped


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with jitter: ``initial_s * factor**n``, at most ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 120.0
    factor: float = 2.0
    jitter: float = 0.2
    rng: random.Random | None = None
    failures: int = 0

    def next_delay(self) -> float:
        """The wait before the next try, after one more failure."""
        base = min(self.max_s, self.initial_s * self.factor**self.failures)
        self.failures += 1
        spread = (self.rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.max_s, base * (1.0 + spread)))

    def reset(self) -> None:
        self.failures = 0


def fixed_token(value: str | None) -> Callable[[], str | None]:
    """A token given once (``GPUPOOL_AGENT_TOKEN``)."""
    return lambda: value


def token_from_file(path: Path) -> Callable[[], str | None]:
    """Read the agent token from ``path`` at every push, so a rotated Secret takes effect."""

    def read() -> str | None:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            log.warning("cannot read the agent token file %s: %s", path, exc)
            return None

    return read


class Pusher:
    """Sends the buffer's samples to the server, batch by batch."""

    def __init__(
        self,
        buffer: SampleBuffer[UsageSample],
        server_url: str,
        node: str,
        interval_s: float,
        token: Callable[[], str | None],
        client: httpx.Client,
        batch_size: int = 500,
        backoff: Backoff | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._buffer = buffer
        self.url = server_url.rstrip("/") + SAMPLES_PATH
        self._node = node
        self._interval_s = interval_s
        self._token = token
        self._client = client
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self._wall_clock = wall_clock
        self._retry_after: float | None = None
        self._streak = 0
        self.failures = 0
        self.pushed = 0
        self.last_success: float | None = None

    def push_once(self) -> PushOutcome:
        """Take one batch and try to deliver it."""
        batch = self._buffer.take(self.batch_size)
        if not batch:
            return PushOutcome.EMPTY
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = batch_body(self._node, self._interval_s, batch)
        try:
            response = self._client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return self._failed(batch, f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            self._buffer.acknowledge(batch)
            self.pushed += len(batch)
            self.last_success = self._wall_clock()
            if self._streak:
                log.info(
                    "pushing samples works again after %d failed tries; %d pending",
                    self._streak,
                    self._buffer.pending,
                )
            self._streak = 0
            self.backoff.reset()
            return PushOutcome.SENT
        detail = f"HTTP {status}: {response.text[:200]}"
        if status == 413 and self.batch_size > 1:
            # Too large for the server's body limit: smaller batches from now on.
            self.batch_size = max(1, self.batch_size // 2)
            return self._failed(batch, f"{detail} (batch size now {self.batch_size})")
        if status in _INVALID or status == 413:
            self._buffer.reject(batch)
            self.failures += 1
            log.error("server rejected %d samples, dropped them: %s", len(batch), detail)
            return PushOutcome.REJECTED
        if status in (401, 403):
            detail += " (is the agent token right?)"
        self._retry_after = _retry_after_s(response)
        return self._failed(batch, detail)

    def _failed(self, batch: list[UsageSample], detail: str) -> PushOutcome:
        self._buffer.put_back(batch)
        self.failures += 1
        self._streak += 1
        # First failure of a streak, then every tenth: an outage should not flood the log.
        if self._streak == 1 or self._streak % 10 == 0:
            log.warning(
                "pushing %d samples to %s failed (%d in a row): %s; %d pending",
                len(batch),
                self.url,
                self._streak,
                detail,
                self._buffer.pending,
            )
        return PushOutcome.RETRY

    def push_pending(self, stop: threading.Event | None = None) -> PushOutcome:
        """Push batch after batch until the buffer is empty or a push fails."""
        outcome = PushOutcome.EMPTY
        while stop is None or not stop.is_set():
            result = self.push_once()
            if result in (PushOutcome.EMPTY, PushOutcome.RETRY):
                return result if result is PushOutcome.RETRY else outcome
            outcome = result
        return outcome

    def next_delay(self, outcome: PushOutcome, interval_s: float) -> float:
        """How long to wait before the next round after ``outcome``."""
        if outcome is not PushOutcome.RETRY:
            return interval_s
        delay = self.backoff.next_delay()
        if self._retry_after is not None:
            delay = min(self.backoff.max_s, max(delay, self._retry_after))
            self._retry_after = None
        return delay

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Push every ``interval_s`` (backing off after failures) until ``stop``; then flush."""
        delay = interval_s
        while not stop.wait(delay):
            delay = self.next_delay(self.push_pending(stop), interval_s)
        # Shutting down (SIGTERM on a node drain): one last try for what is buffered.
        self.push_pending()


def _retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (either form), if the server sent one."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
