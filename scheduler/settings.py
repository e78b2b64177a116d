"""All configuration in one place: environment variables with the prefix ``GPUPOOL_``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Tokens the server refuses to start with outside demo/dev mode.
WEAK_OPERATOR_TOKENS = frozenset({"", "changeme", "operator", "admin", "secret", "dev", "demo"})


class Settings(BaseSettings):
    """Settings of a gpupool server, read from ``GPUPOOL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="GPUPOOL_", extra="ignore")

    database_url: str = Field(
        "sqlite:///gpupool.db",
        description="SQLAlchemy URL; SQLite file by default, postgresql://… for production.",
    )
    operator_token: SecretStr = Field(
        SecretStr(""), description="Bearer token of the hub operator (required unless dev mode)."
    )
    agent_token: SecretStr = Field(
        SecretStr(""), description="Bearer token node agents use to push usage samples."
    )
    dev_mode: bool = Field(False, description="Allow an empty/weak operator token (demo, dev).")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    # Kubernetes: without a kubeconfig or in-cluster config the controller runs against the
    # in-process simulated cluster (the embedded default).
    kubeconfig: str | None = Field(None, description="Path of a kubeconfig to enforce plans on.")
    kube_context: str | None = Field(None, description="Context of the kubeconfig to use.")
    in_cluster: bool = Field(False, description="Use the pod's service account (in a cluster).")
    controller: bool = Field(True, description="Run the controller (set false for API-only).")
    scheduler_process: bool = Field(
        False,
        description="gpupool serve: run cycles and the controller in a child process, so "
        "planning never competes with the API for the interpreter lock (opt-in).",
    )
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="gpupool serve: API processes sharing the port; above 1 the cycles and "
        "the controller run in the scheduler process.",
    )
    scheduler_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="gpupool serve: how much lower the scheduler process's CPU priority is "
        "than the API's (a nice increment); when they compete for cores, requests go first.",
    )
    scheduler_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the scheduler process's own /metrics."
    )

    # planning
    cycle_interval_s: float = Field(30.0, gt=0, description="Timer between scheduling cycles.")
    cycle_debounce_s: float = Field(0.5, ge=0, description="Wait after an event before a cycle.")
    cycle_min_gap_s: float = Field(
        1.0,
        ge=0,
        description="Least idle time between cycles (at least the last cycle's own duration), "
        "so a stream of submits cannot keep the server planning all the time.",
    )
    horizon_s: int = Field(7 * 24 * 3600, gt=0, description="How far ahead the plan reaches.")
    resolution_s: int = Field(60, gt=0, description="Time step of the CP-SAT model.")
    min_runtime_s: int = Field(
        600, ge=0, description="Borrowed reservations run at least this long before reclaim."
    )
    fair_share_half_life_s: float = Field(
        7 * 24 * 3600, gt=0, description="Half-life of decayed usage (fair-share)."
    )
    lease_ttl_s: float = Field(
        10.0, gt=0, description="Leader lease time-to-live; a dead leader is replaced after it."
    )
    solver: str = Field(
        "cpsat", description="Planner: cpsat (greedy first, then CP-SAT) or greedy."
    )
    solver_time_limit_s: float = Field(
        1.0, gt=0, description="CP-SAT time per cycle; the best plan found by then is used."
    )
    solver_workers: int = Field(2, ge=1)

    # requests
    max_duration_s: int = Field(
        14 * 24 * 3600, gt=0, description="Longest duration a request may ask for."
    )
    api_threads: int = Field(
        8,
        ge=1,
        le=1000,
        description="Threads of a server process that run request handlers (database work). "
        "More let more requests wait on locks at once; fewer cost less switching.",
    )
    queue_position_max_age_s: float = Field(
        2.0,
        ge=0,
        description="Polls count a request's queue position against one read of its GPU "
        "class's waiting requests, read again once this old (s); 0: count in the database on "
        "every poll, which reads every waiting request of the class.",
    )
    page_size_max: int = Field(500, ge=1)
    max_body_bytes: int = Field(1_048_576, gt=0, description="Largest request body accepted.")
    rate_limit_per_s: float = Field(
        50.0, ge=0, description="Requests per second per tenant API key (0: no limit)."
    )
    rate_limit_burst: float = Field(100.0, ge=1, description="Bucket size of the rate limit.")

    # usage accounting (POST /v1/usage/samples, GET /v1/usage)
    usage_max_batch: int = Field(
        500, ge=1, le=10_000, description="Most samples in one push; more is answered 413."
    )
    usage_max_skew_s: float = Field(
        300.0, ge=0, description="How far ahead of the server's clock a sample's ts may be."
    )
    usage_stale_s: float = Field(
        120.0, gt=0, description="A GPU whose newest sample is older counts as not reporting."
    )

    # idle reservations
    idle_util_pct: float = Field(
        5.0,
        ge=0,
        le=100,
        description="A reserved GPU below this utilisation (%) is idle; 0 turns detection off.",
    )
    idle_minutes: float = Field(
        30.0, gt=0, description="How long a reservation's GPUs must stay idle to be flagged."
    )
    idle_action: Literal["none", "end", "reclaimable"] = Field(
        "none",
        description="What a flagged reservation gets besides the event and the metric: "
        "nothing, ended early (request expired, reason idle_ended), or made borrowed so "
        "guaranteed demand may reclaim it.",
    )

    def operator_token_is_weak(self) -> bool:
        token = self.operator_token.get_secret_value()
        return token.strip().lower() in WEAK_OPERATOR_TOKENS or len(token) < 16
