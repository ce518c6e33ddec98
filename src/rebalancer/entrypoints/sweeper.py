"""The sweeper: runs
:func:`~rebalancer.service_layer.handlers.timeouts.sweep_timeouts` for every tenant at a fixed
interval (in the worker process that runs the outbox relay), and, less often,
:func:`~rebalancer.service_layer.handlers.settling.raise_overdue_settlements` (fills whose
settlement confirmation never arrived).

Several sweepers may run side by side: each due order is claimed with a row lock and re-read,
so an order is re-sent once per timeout whichever sweeper gets it; an overdue fill is claimed
with ``SKIP LOCKED`` and stamped, so its alert is raised once.

The acknowledgement timeout runs from when an order's event actually left the outbox, not from
when the order was stamped as sent (the transaction that queued its ``order_placed``): under
load the outbox relay publishes late, and counting the relay's delay against the venue expired
orders the venue still acknowledged. Timeouts and intervals are settings
(``REBALANCER_ORDER_ACK_TIMEOUT_S``, ``..._ORDER_SWEEP_INTERVAL_S``, ``..._ORDER_MAX_SENDS``,
``..._SETTLEMENT_OVERDUE_CHECK_INTERVAL_S``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.consumer_lag import ConsumerLagRepository
from rebalancer.service_layer.handlers.recommending import requeue_stalled
from rebalancer.service_layer.handlers.settling import raise_overdue_settlements
from rebalancer.service_layer.handlers.timeouts import DEFAULT_MAX_SENDS, sweep_timeouts
from rebalancer.service_layer.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from rebalancer.config import Settings

log = structlog.get_logger(__name__)

ACK_TIMEOUT = timedelta(seconds=30)
"""Default of how long the venue has to acknowledge an order (from when its event was
published) before it is re-sent (``REBALANCER_ORDER_ACK_TIMEOUT_S``)."""

SWEEP_INTERVAL_S = 5.0
"""Default seconds between sweeps (``REBALANCER_ORDER_SWEEP_INTERVAL_S``)."""

MAX_READ_LAG = timedelta(minutes=5)
"""Default of the most the sweeper waits longer while the consumers read execution reports
late (``REBALANCER_ORDER_ACK_MAX_READ_LAG_S``)."""

REQUEUE_AFTER = timedelta(minutes=2)
"""Default of how long a rebalance may stay ``requested`` after its trigger was published
before it is published again (``REBALANCER_REBALANCE_REQUEUE_AFTER_S``)."""

OVERDUE_INTERVAL = timedelta(minutes=5)
"""How often the settlement-overdue check runs (its deadlines are business days)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def published_cutoff(conn: sa.Connection, published_before: datetime) -> datetime | None:
    """Sent stamps older than this belong to events the relay had published by
    ``published_before``; ``None`` when the outbox is empty (nothing can be pending).

    An order's ``sent_at`` is the ``created_at`` of its outbox event (one transaction, one
    ``now()``), and the relay publishes in id order, so the newest row published before
    ``published_before`` bounds the stamps that were really out by then. With no such row
    (every event went out later, or none has yet) only stamps older than the oldest row kept
    count (their events are gone from the outbox, so they were published long ago).
    """
    ob = orm.outbox
    newest: datetime | None = conn.execute(
        sa.select(ob.c.created_at)
        .where(ob.c.published_at < published_before)
        .order_by(ob.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if newest is not None:
        out: datetime = newest + timedelta(microseconds=1)  # that transaction's rows are out
        return out
    oldest: datetime | None = conn.execute(
        sa.select(ob.c.created_at).order_by(ob.c.id).limit(1)
    ).scalar_one_or_none()
    return oldest


class OrderSweeper:
    """Re-sends, cancels or expires unacknowledged orders of every tenant until stopped, and
    raises ``settlement_overdue`` alerts.

    Parameters
    ----------
    engine
        Database engine.
    timeout
        Acknowledgement timeout per send, counted from when the send's event was published
        (see :func:`published_cutoff`).
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
    from_publication
        Count the timeout from the event's publication (default) rather than from the order's
        sent stamp.
    requeue_after
        How long a single-account rebalance may stay ``requested`` after its trigger was
        published before it is published again (:func:`requeue_stalled`); ``None``: never.
        Checked every quarter of it (at most every sweep).
    max_read_lag
        The most the clock is held back for the service consumers' read delay of execution
        reports (``consumer_lag``, see :mod:`rebalancer.entrypoints.read_lag`); zero: never.
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
        from_publication: bool = True,
        requeue_after: timedelta | None = REQUEUE_AFTER,
        max_read_lag: timedelta = MAX_READ_LAG,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.interval_s = interval_s
        self.max_sends = max_sends
        self.settlement_grace_business_days = settlement_grace_business_days
        self.overdue_interval = overdue_interval
        self.clock = clock
        self.from_publication = from_publication
        self.requeue_after = requeue_after
        self.max_read_lag = max_read_lag
        self._last_requeue: datetime | None = None
        self._last_overdue: datetime | None = None

    @classmethod
    def from_settings(cls, engine: sa.Engine, settings: Settings) -> OrderSweeper:
        """A sweeper with the timeouts and intervals of ``settings``."""
        return cls(
            engine,
            timeout=timedelta(seconds=settings.order_ack_timeout_s),
            interval_s=settings.order_sweep_interval_s,
            max_sends=settings.order_max_sends,
            settlement_grace_business_days=settings.settlement_overdue_grace_business_days,
            overdue_interval=timedelta(seconds=settings.settlement_overdue_check_interval_s),
            requeue_after=timedelta(seconds=settings.rebalance_requeue_after_s),
            max_read_lag=timedelta(seconds=settings.order_ack_max_read_lag_s),
        )

    def effective_now(self, now: datetime) -> datetime:
        """The clock the timeouts are judged by: ``now``, held back by the relay's delay on
        the way out and by the consumers' read delay on the way back.

        A send is due when its event was published more than ``timeout`` before ``now``, i.e.
        when its stamp is older than :func:`published_cutoff` of ``now - timeout``; returned
        as the ``now`` that makes ``sweep_timeouts``' stamp cutoff (``now - timeout``) equal.
        An answer the venue sent is read only after the consumers' delay (the largest measured
        within the last ``timeout``, at most ``max_read_lag``), so the clock is held back by
        that as well: an acknowledgement still in the broker's backlog is not a missing one.
        """
        judged = now - self.read_lag(now)
        if not self.from_publication:
            return judged
        with self.engine.connect() as conn:
            cutoff = published_cutoff(conn, now - self.timeout)
        if cutoff is None:
            return judged
        return min(judged, cutoff + self.timeout)

    def read_lag(self, now: datetime) -> timedelta:
        """The consumers' largest read delay of execution reports measured within the last
        ``timeout`` before ``now``, at most ``max_read_lag`` (zero when none was measured)."""
        if self.max_read_lag <= timedelta(0):
            return timedelta(0)
        with self.engine.connect() as conn:
            lag_s = ConsumerLagRepository(conn).largest_since(now - self.timeout)
        return min(timedelta(seconds=lag_s), self.max_read_lag)

    def _tenants(self) -> list[str]:
        with UnitOfWork(self.engine, "_") as uow:
            return list(uow.tenants.list())

    def sweep_once(self, now: datetime | None = None) -> int:
        """One sweep over all tenants; returns how many orders or blocks it acted on.

        ``now`` (default: the clock) is held back by the relay's delay (:meth:`effective_now`).

        Also runs :meth:`check_settlements` when ``overdue_interval`` has passed since the
        last check (always on the first sweep), and :meth:`requeue_rebalances` every quarter of
        ``requeue_after``.
        """
        when = now or self.clock()
        judged = self.effective_now(when)
        acted = 0
        for tenant in self._tenants():
            with UnitOfWork(self.engine, tenant) as uow:
                r = sweep_timeouts(uow, judged, self.timeout, max_sends=self.max_sends)
            acted += len(r.resent) + len(r.cancel_requested) + len(r.expired)
            if r.resent or r.cancel_requested or r.expired:
                log.info(
                    "orders.swept",
                    tenant=tenant,
                    resent=len(r.resent),
                    cancel_requested=len(r.cancel_requested),
                    expired=len(r.expired),
                    held_back_s=round((when - judged).total_seconds(), 3),
                )
        if self._last_overdue is None or when - self._last_overdue >= self.overdue_interval:
            self.check_settlements(when)
        if self.requeue_after is not None and (
            self._last_requeue is None or when - self._last_requeue >= self.requeue_after / 4
        ):
            self._last_requeue = when
            self.requeue_rebalances(judged)
        return acted

    def requeue_rebalances(self, now: datetime | None = None) -> list[str]:
        """Publish the trigger of every tenant's stalled requested rebalance again (see
        :func:`requeue_stalled`); returns the rebalance ids requeued."""
        when = now or self.clock()
        if self.requeue_after is None:
            return []
        out: list[str] = []
        for tenant in self._tenants():
            with UnitOfWork(self.engine, tenant) as uow:
                ids = requeue_stalled(uow, when - self.requeue_after)
            if ids:
                log.warning("rebalances.requeued", tenant=tenant, rebalances=len(ids))
            out += [str(i) for i in ids]
        return out

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
        with self.engine.begin() as conn:  # rows of processes gone for a day
            ConsumerLagRepository(conn).prune(when - timedelta(days=1))
        return alerted

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set (errors are logged, not fatal)."""
        while not stop.wait(self.interval_s):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("orders.sweep_failed", error=repr(exc))
