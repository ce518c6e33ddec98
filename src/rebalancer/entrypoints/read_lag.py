"""How far behind this process's service consumers read the venue's execution reports.

The order sweeper re-sends an order the venue has not acknowledged within the timeout. While
the consumers work through a backlog, the acknowledgement may be waiting in the broker: in the
demo they read execution reports 48 s (median) to 64 s after the venue sent them, so with the
30 s timeout about 500 of 700 orders were re-sent, and every re-send came back as duplicate
reports and settlements on top of the backlog. :class:`ReadLag` measures the delay
(``handled - occurred_at`` of each execution report) and writes the largest of each second to
``consumer_lag``; :meth:`OrderSweeper.effective_now
<rebalancer.entrypoints.sweeper.OrderSweeper.effective_now>` holds its clock back by the
largest recent one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog

from rebalancer.adapters.repositories.consumer_lag import ConsumerLagRepository

log = structlog.get_logger(__name__)


class ReadLag:
    """The largest read delay (seconds) of this process since its last write, written at
    most once every ``every_s`` seconds (an upsert of one row per process).

    Parameters
    ----------
    engine
        Database engine (the write is a transaction of its own).
    consumer
        This process's row (default ``host:pid``).
    every_s
        Least seconds between two writes.
    clock
        Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        engine: sa.Engine,
        consumer: str | None = None,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._largest: float | None = None
        self._last_write = -float("inf")

    def observe(self, occurred_at: datetime, now: datetime | None = None) -> None:
        """Count one report sent at ``occurred_at`` and handled at ``now`` (default: now);
        writes the largest delay since the last write when ``every_s`` has passed. A failed
        write is logged and dropped (the delay is advice to the sweeper, never a reason to
        fail the handler)."""
        lag_s = max(((now or datetime.now(UTC)) - occurred_at).total_seconds(), 0.0)
        with self._lock:
            self._largest = lag_s if self._largest is None else max(self._largest, lag_s)
            tick = self.clock()
            if tick - self._last_write < self.every_s:
                return
            value, self._largest, self._last_write = self._largest, None, tick
        try:
            with self.engine.begin() as conn:
                ConsumerLagRepository(conn).record(self.consumer, value)
        except Exception as exc:  # advisory only
            log.warning("read_lag.write_failed", error=repr(exc))


_METERS: dict[int, ReadLag] = {}
_METERS_LOCK = threading.Lock()


def read_lag(engine: sa.Engine) -> ReadLag:
    """The process's :class:`ReadLag` for ``engine`` (one per engine)."""
    with _METERS_LOCK:
        meter = _METERS.get(id(engine))
        if meter is None or meter.engine is not engine:
            meter = _METERS[id(engine)] = ReadLag(engine)
        return meter
