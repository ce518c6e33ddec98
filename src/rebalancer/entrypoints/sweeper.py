"""The sweeper: runs
:func:`~rebalancer.service_layer.handlers.timeouts.sweep_timeouts` for every tenant at a fixed
interval (in the worker process that runs the outbox relay), and, less often,
:func:`~rebalancer.service_layer.handlers.settling.raise_overdue_settlements` (fills whose
settlement confirmation never arrived).

Several sweepers may run side by side: each due order is claimed with a row lock and re-read,
so an order is re-sent once per timeout whichever sweeper gets it; an overdue fill is claimed
with ``SKIP LOCKED`` and stamped, so its alert is raised once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import structlog

from rebalancer.service_layer.handlers.settling import raise_overdue_settlements
from rebalancer.service_layer.handlers.timeouts import DEFAULT_MAX_SENDS, sweep_timeouts
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

ACK_TIMEOUT = timedelta(seconds=30)
"""How long the venue has to acknowledge an order before it is re-sent."""

SWEEP_INTERVAL_S = 5.0

OVERDUE_INTERVAL = timedelta(minutes=5)
"""How often the settlement-overdue check runs (its deadlines are business days)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OrderSweeper:
    """Re-sends, cancels or expires unacknowledged orders of every tenant until stopped, and
    raises ``settlement_overdue`` alerts.

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
    settlement_grace_business_days
        Business days after a fill's expected settlement date before it is overdue.
    overdue_interval
        Least time between two settlement-overdue checks.
    clock
        Current time (timezone-aware); injectable for tests.
    """

    def __init__(
        self,
        engine: sa.Engine,
        timeout: timedelta = ACK_TIMEOUT,
        interval_s: float = SWEEP_INTERVAL_S,
        max_sends: int = DEFAULT_MAX_SENDS,
        *,
        settlement_grace_business_days: int = 1,
        overdue_interval: timedelta = OVERDUE_INTERVAL,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.interval_s = interval_s
        self.max_sends = max_sends
        self.settlement_grace_business_days = settlement_grace_business_days
        self.overdue_interval = overdue_interval
        self.clock = clock
        self._last_overdue: datetime | None = None

    def _tenants(self) -> list[str]:
        with UnitOfWork(self.engine, "_") as uow:
            return list(uow.tenants.list())

    def sweep_once(self, now: datetime | None = None) -> int:
        """One sweep over all tenants; returns how many orders or blocks it acted on.

        Also runs :meth:`check_settlements` when ``overdue_interval`` has passed since the
        last check (always on the first sweep).
        """
        when = now or self.clock()
        acted = 0
        for tenant in self._tenants():
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
        if self._last_overdue is None or when - self._last_overdue >= self.overdue_interval:
            self.check_settlements(when)
        return acted

    def check_settlements(self, now: datetime | None = None) -> list[str]:
        """Raise ``settlement_overdue`` for every tenant's overdue fills (UTC date of ``now``);
        returns the report ids alerted."""
        when = now or self.clock()
        self._last_overdue = when
        today = when.astimezone(UTC).date()
        alerted: list[str] = []
        for tenant in self._tenants():
            with UnitOfWork(self.engine, tenant) as uow:
                ids = raise_overdue_settlements(
                    uow, today, grace_business_days=self.settlement_grace_business_days
                )
            if ids:
                log.warning("settlements.overdue", tenant=tenant, fills=len(ids))
            alerted += ids
        return alerted

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set (errors are logged, not fatal)."""
        while not stop.wait(self.interval_s):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("orders.sweep_failed", error=repr(exc))
