"""The node agent's configuration: one validated value built by the CLI (or by tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class AgentSetupError(Exception):
    """The agent cannot start as configured (e.g. no Kubernetes credentials); the message
    says what to change."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything ``gpupool agent`` can be told. Invalid values raise ``ValueError`` naming
    the option and the reason, before anything starts."""

    node_name: str
    server_url: str | None = None
    token: str | None = None
    token_file: Path | None = None
    interval_s: float = 10.0
    push_interval_s: float = 15.0
    buffer_size: int = 50_000
    batch_size: int = 500
    listen_address: str = "0.0.0.0"
    port: int = 9400
    host_proc: Path = Path("/proc")
    kubernetes: bool = True
    kubeconfig: Path | None = None
    pod_refresh_s: float = 30.0
    nvml_retry_s: float = 30.0
    request_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.node_name.strip():
            raise ValueError("node_name: must not be empty (set --node-name or NODE_NAME)")
        if self.server_url is not None:
            parts = urlsplit(self.server_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"server_url: {self.server_url!r} is not an http(s) URL such as "
                    "http://gpupool.gpupool-system:8000"
                )
        if self.token is not None and self.token_file is not None:
            raise ValueError("token: give either a token or a token file, not both")
        _at_least("interval_s", self.interval_s, 1.0)
        _at_least("push_interval_s", self.push_interval_s, 1.0)
        _at_least("buffer_size", self.buffer_size, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("pod_refresh_s", self.pod_refresh_s, 1.0)
        _at_least("nvml_retry_s", self.nvml_retry_s, 1.0)
        _at_least("request_timeout_s", self.request_timeout_s, 0.1)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port (0-65535; 0 picks a free one)")


def _at_least(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum:g}, got {value:g}")
