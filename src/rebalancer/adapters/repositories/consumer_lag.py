"""How far behind the service's consumers read the venue's execution reports (table
``consumer_lag``, migration 0008): one row per consumer process."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm


class ConsumerLagRepository:
    """Writes a process's recent read delay; reads the largest recent one of all processes."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def record(self, consumer: str, lag_s: float) -> None:
        """Store ``lag_s`` (seconds) as ``consumer``'s delay, measured now."""
        t = orm.consumer_lag
        self.conn.execute(
            insert(t)
            .values(consumer=consumer, lag_s=lag_s)
            .on_conflict_do_update(
                index_elements=[t.c.consumer],
                set_={"lag_s": lag_s, "measured_at": sa.func.now()},
            )
        )

    def largest_since(self, since: datetime) -> float:
        """The largest delay (seconds) measured at or after ``since``; 0.0 when none was."""
        t = orm.consumer_lag
        value = self.conn.execute(
            sa.select(sa.func.max(t.c.lag_s)).where(t.c.measured_at >= since)
        ).scalar_one_or_none()
        return max(float(value or 0.0), 0.0)

    def prune(self, before: datetime) -> int:
        """Delete rows measured before ``before`` (processes long gone); returns how many."""
        t = orm.consumer_lag
        return int(self.conn.execute(sa.delete(t).where(t.c.measured_at < before)).rowcount)
