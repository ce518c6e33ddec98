"""The order-timeout sweeper: runs
:func:`~rebalancer.service_layer.handlers.timeouts.sweep_timeouts` for every tenant at a fixed
interval (in the worker process that runs the outbox relay).

Several sweepers may run side by side: each due order is claimed with a row lock and re-read,
so an order is re-sent once per timeout whichever sweeper gets it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog

from rebalancer.service_layer.handlers.timeouts import DEFAULT_MAX_SENDS, sweep_timeouts
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

ACK_TIMEOUT = timedelta(seconds=30)
"""How long the venue has to acknowledge an order before it is re-sent."""

SWEEP_INTERVAL_S = 5.0


class OrderSweeper:
    """Re-sends, cancels or expires unacknowledged orders of every tenant until stopped.

    Parameters
    ----------
    engine
        Database engine.
    timeout
        Acknowledgement timeout per send.
    interval_s
        Seconds between sweeps.
    max_sends
        Sends before giving up on an order.
    """

    def __init__(
        self,
        engine: sa.Engine,
        timeout: timedelta = ACK_TIMEOUT,
        interval_s: float = SWEEP_INTERVAL_S,
        max_sends: int = DEFAULT_MAX_SENDS,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.interval_s = interval_s
        self.max_sends = max_sends

    def sweep_once(self, now: datetime | None = None) -> int:
        """One sweep over all tenants; returns how many orders or blocks it acted on."""
        when = now or datetime.now(UTC)
        with UnitOfWork(self.engine, "_") as uow:
            tenants = uow.tenants.list()
        acted = 0
        for tenant in tenants:
            with UnitOfWork(self.engine, tenant) as uow:
                r = sweep_timeouts(uow, when, self.timeout, max_sends=self.max_sends)
            acted += len(r.resent) + len(r.cancel_requested) + len(r.expired)
            if r.resent or r.cancel_requested or r.expired:
                log.info(
                    "orders.swept",
                    tenant=tenant,
                    resent=len(r.resent),
                    cancel_requested=len(r.cancel_requested),
                    expired=len(r.expired),
                )
        return acted

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set (errors are logged, not fatal)."""
        while not stop.wait(self.interval_s):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("orders.sweep_failed", error=repr(exc))
