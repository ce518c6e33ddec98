"""Settings, read from the environment (prefix ``REBALANCER_``) or a ``.env`` file.

With no ``REBALANCER_DATABASE_URL`` the service starts an embedded PostgreSQL in
``{data_dir}/pgdata``; with no ``REBALANCER_PULSAR_URL`` it starts an embedded pulsar-lite broker
in ``{data_dir}/pulsar``. Secrets (API keys, JWT secret) are :class:`~pydantic.SecretStr` and are
never logged or rendered in ``repr``.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Scope(enum.StrEnum):
    """Permission scopes carried by API keys and JWTs."""

    READ = "read"
    TRADE = "trade"
    APPROVE = "approve"
    ADMIN = "admin"


class SolverChain(enum.StrEnum):
    """Solver chain of the service's recommendations (``REBALANCER_SOLVER_CHAIN``)."""

    FAST = "fast"
    """The JAX fast path first, then Clarabel, SCS and the heuristic. A request whose size
    bucket is not compiled yet never waits: Clarabel answers it at once (``solver.fallbacks``
    says "fast path compiling bucket ...") and the bucket compiles in the background."""
    CLARABEL = "clarabel"
    """CVXPY + Clarabel first (the reference), no JAX in the process."""


_BUCKET = re.compile(r"^\d+x\d+x\d+(x\d+x\d+)?(\+cones)?$")


class ApiKeySpec(BaseModel):
    """One API key from settings: the secret, its tenant and its scopes."""

    key: SecretStr
    tenant: str
    scopes: list[Scope] = Field(default_factory=lambda: list(Scope))
    name: str = "settings"


class Settings(BaseSettings):
    """Service configuration.

    Attributes
    ----------
    database_url
        SQLAlchemy URL of a PostgreSQL database (``postgresql+psycopg://...``); ``None`` starts
        the embedded server.
    pulsar_url
        ``pulsar://host:6650`` of an Apache Pulsar cluster; ``None`` starts embedded pulsar-lite.
    data_dir
        Where embedded servers keep their data (reused by the next run).
    api_keys
        JSON list of ``{"key", "tenant", "scopes"}``; keys are compared by SHA-256 hash.
    jwt_secret
        HMAC secret for JWT bearer tokens (claims ``sub``, ``tenant``, ``scopes``); ``None``
        disables JWT.
    solver_chain
        Solver chain of the API's analyses and the stored rebalances (see
        :class:`SolverChain`).
    warm_buckets
        Fast-path size buckets compiled in a background thread at API and worker start-up,
        comma-separated ``instruments x lots per instrument x factors`` (rounded up to
        buckets; ``x scenarios x sectors`` and ``+cones`` optional; empty: none), see
        docs/optimizer.md.
    warm_recent
        Also warm up to this many buckets that requests had to compile in earlier runs
        (remembered in the JAX cache directory; 0: off).
    worker_xla_threads
        Threads of XLA's CPU pool in each ``rebalancer worker`` process (0: one per CPU,
        XLA's default). One by default: a worker process is the unit of parallelism, and a
        larger pool spin-waits between its threads on the fast path's small kernels (see
        :mod:`rebalancer.entrypoints.xla_threads`). The API process keeps XLA's default.
    """

    model_config = SettingsConfigDict(
        env_prefix="REBALANCER_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    database_url: str | None = None
    pulsar_url: str | None = None
    data_dir: Path = Path("var")
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    topic_namespace: str = "persistent://public/default"
    subscription: str = "rebalancer"
    db_pool_size: int = 5
    db_max_overflow: int = 5
    outbox_batch_size: int = 200
    consumer_max_redeliveries: int = 3
    base_currency: str = "USD"
    max_remainder_rounds: int = Field(default=1, ge=0)
    """Automatic follow-ups per original rebalance when it ends partly done (0: off)."""
    settlement_overdue_grace_business_days: int = Field(default=1, ge=0)
    """Business days after a fill's expected settlement date before ``settlement_overdue``."""
    order_ack_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds the venue has to acknowledge the first send of an order, counted from when its
    event left the outbox, before the sweeper re-sends it; each later send waits twice as long
    as the one before (at most 8 times this). After ``order_max_sends`` sends and that wait it
    requests a cancel, then expires the order after one more timeout."""
    order_ack_max_read_lag_s: float = Field(default=300.0, ge=0)
    """The most seconds the sweeper waits longer while the service's consumers read the
    venue's execution reports late (their largest delay of the last timeout, measured per
    process in ``consumer_lag``): an acknowledgement still in the broker's backlog is not a
    missing one. 0: the timeout runs on the wall clock alone."""
    order_max_sends: int = Field(default=3, ge=1)
    """Sends of an unacknowledged order (the first included) before a cancel is requested."""
    order_sweep_interval_s: float = Field(default=5.0, gt=0)
    """Seconds between two sweeps of unacknowledged orders."""
    settlement_overdue_check_interval_s: float = Field(default=300.0, gt=0)
    """Least seconds between two settlement-overdue checks (their deadlines are days)."""
    rebalance_requeue_after_s: float = Field(default=120.0, gt=0)
    """Seconds a single-account rebalance may stay ``requested`` after its trigger was
    published before the sweeper publishes it again (an event stranded in the broker;
    idempotent; triggers that join the rebalance meanwhile do not postpone it)."""
    solver_chain: SolverChain = SolverChain.FAST
    warm_buckets: str = "16x4x16,32x4x24,64x4x12"
    warm_recent: int = Field(default=4, ge=0)
    worker_xla_threads: int = Field(default=1, ge=0)

    @field_validator("solver_chain", mode="before")
    @classmethod
    def _chain(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("warm_buckets")
    @classmethod
    def _buckets(cls, v: str) -> str:
        items = [x.strip().lower().replace(" ", "") for x in v.split(",") if x.strip()]
        for item in items:
            if not _BUCKET.match(item):
                raise ValueError(
                    f"warm bucket {item!r}: write instruments x lots x factors, e.g. 512x4x12"
                )
        return ",".join(items)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
