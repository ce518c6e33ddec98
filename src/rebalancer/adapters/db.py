"""Engine creation with a bounded connection pool."""

from __future__ import annotations

import sqlalchemy as sa

from rebalancer.config import Settings


def make_engine(url: str, settings: Settings | None = None) -> sa.Engine:
    """A SQLAlchemy engine (psycopg 3) with pool limits from settings and pre-ping."""
    s = settings or Settings()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(
        url,
        pool_size=s.db_pool_size,
        max_overflow=s.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        future=True,
    )
