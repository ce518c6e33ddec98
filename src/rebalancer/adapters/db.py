"""Engine creation with a bounded connection pool."""

from __future__ import annotations

import sqlalchemy as sa

from rebalancer.config import Settings

CONNECT_TIMEOUT_S = 5
"""libpq ``connect_timeout``: a dead or unreachable server fails a connection attempt after this
many seconds instead of hanging (overridable with ``connect_timeout`` in the URL or a
``db_connect_timeout_s`` setting)."""

POOL_TIMEOUT_S = 10
"""How long a request waits for a free pooled connection before failing (``QueuePool``)."""


def make_engine(url: str, settings: Settings | None = None) -> sa.Engine:
    """A SQLAlchemy engine (psycopg 3) with pool limits from settings, pre-ping and timeouts.

    At most ``db_pool_size + db_max_overflow`` connections per process; a checkout waits at
    most :data:`POOL_TIMEOUT_S`; connecting gives up after :data:`CONNECT_TIMEOUT_S`; every
    checkout is pinged, so connections broken by a database restart are replaced transparently.
    """
    s = settings or Settings()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args: dict[str, object] = {}
    if "connect_timeout=" not in url:
        connect_args["connect_timeout"] = int(getattr(s, "db_connect_timeout_s", CONNECT_TIMEOUT_S))
    return sa.create_engine(
        url,
        pool_size=s.db_pool_size,
        max_overflow=s.db_max_overflow,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
        future=True,
    )
