"""The outbox relay: publishes committed outbox rows to Pulsar, then marks them sent.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several relays can run side by side without
publishing the same row concurrently. A row is marked published only after the broker confirmed
every message of the batch; a crash in between republishes the batch, which consumers absorb
because they are idempotent by event id (at-least-once publish, exactly-once effect).
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
import structlog
from prometheus_client import Counter, Gauge

from rebalancer.adapters import orm
from rebalancer.adapters.pulsar_bus import Publisher

log = structlog.get_logger(__name__)

PUBLISHED = Counter("rebalancer_outbox_published_total", "Outbox events published to Pulsar")
PUBLISH_ERRORS = Counter("rebalancer_outbox_publish_errors_total", "Failed outbox batches")
BACKLOG = Gauge("rebalancer_outbox_backlog", "Unpublished outbox rows seen by the relay")


class OutboxRelay:
    """Moves outbox rows to Pulsar in batches.

    Parameters
    ----------
    engine
        Database engine.
    publisher
        Pulsar publisher.
    batch_size
        Rows claimed per transaction.
    """

    def __init__(self, engine: sa.Engine, publisher: Publisher, batch_size: int = 200) -> None:
        self.engine = engine
        self.publisher = publisher
        self.batch_size = batch_size

    def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        t = orm.outbox
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.topic, t.c.key, t.c.body)
                .where(t.c.published_at.is_(None))
                .order_by(t.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            conn.execute(
                sa.update(t)
                .where(t.c.id.in_([r.id for r in rows]))
                .values(attempts=t.c.attempts + 1)
            )
            self.publisher.publish_many((r.topic, r.key, bytes(r.body)) for r in rows)
            conn.execute(
                sa.update(t)
                .where(t.c.id.in_([r.id for r in rows]))
                .values(published_at=sa.func.now())
            )
        PUBLISHED.inc(len(rows))
        return len(rows)

    def drain(self, timeout_s: float = 30.0) -> int:
        """Publish until the outbox is empty (or ``timeout_s`` passes); returns the count."""
        total, deadline = 0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self.relay_once()
            total += n
            if n == 0:
                break
        return total

    def run(self, stop: threading.Event, idle_sleep_s: float = 0.05) -> None:
        """Relay until ``stop`` is set, backing off on errors (database or broker down)."""
        backoff = 0.1
        while not stop.is_set():
            try:
                n = self.relay_once()
                backoff = 0.1
                if n == 0:
                    stop.wait(idle_sleep_s)
            except Exception as exc:
                PUBLISH_ERRORS.inc()
                log.warning("outbox.relay_failed", error=repr(exc), retry_in_s=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def backlog(self) -> int:
        with self.engine.connect() as conn:
            n = int(
                conn.execute(
                    sa.select(sa.func.count()).where(orm.outbox.c.published_at.is_(None))
                ).scalar_one()
            )
        BACKLOG.set(n)
        return n
