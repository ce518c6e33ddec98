"""Pulsar consumers of the service: one handler per inbound event type.

Every event is handled inside one unit of work that first records ``(consumer, event_id)`` in
``processed_events``; a redelivered or republished event finds its id there and does nothing,
so each event has its effect exactly once even though delivery is at-least-once.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter

from rebalancer.adapters.outbox_relay import OutboxRelay
from rebalancer.adapters.pulsar_bus import ConsumerLoop, SharedSubscriber
from rebalancer.bootstrap import Runtime
from rebalancer.contracts import (
    TOPICS,
    Envelope,
    EventType,
    ExecutionReportV1,
    MarketDataV1,
    ModelChangedV1,
    PortfolioStateUpdatedV1,
    RebalanceTriggeredV1,
    SettlementConfirmedV1,
    StatusUpdatedV1,
    parse_payload,
)
from rebalancer.domain.errors import NotFound, RebalancerError
from rebalancer.domain.model import ModelPortfolio
from rebalancer.entrypoints.read_lag import read_lag
from rebalancer.entrypoints.sweeper import OrderSweeper
from rebalancer.service_layer.handlers import (
    closing,
    monitoring,
    portfolio,
    recommending,
    settling,
    trading,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork, is_transient, with_retries

log = structlog.get_logger(__name__)

EVENTS = Counter("rebalancer_events_handled_total", "Inbound events handled", ["type", "result"])

SERVICE_CONSUMER = "service"
"""Name under which the service records processed event ids."""

SERVICE_TYPES = (
    EventType.MARKET_DATA,
    EventType.PORTFOLIO_STATE_UPDATED,
    EventType.MODEL_CHANGED,
    EventType.EXECUTION_REPORT,
    EventType.SETTLEMENT_CONFIRMED,
    EventType.REBALANCE_TRIGGERED,
    EventType.STATUS_UPDATED,
)
"""Event types the service consumes (``rebalance_triggered`` is its own, fanned out to
workers through Pulsar so that recommendations are computed by any worker process;
``status_updated`` too: a partly done rebalance opens its follow-up, see ``closing``)."""


def _on_market_data(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, MarketDataV1)
    monitoring.on_market_data(uow, p)


def _on_portfolio_state(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, PortfolioStateUpdatedV1)
    portfolio.apply_portfolio_state(uow, p)


def _on_model_changed(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, ModelChangedV1)
    try:
        current: ModelPortfolio | None = uow.models.get(p.model_id).model
    except NotFound:  # a model we have not seen yet
        current = None
    if current is not None and current.version >= p.version:
        uow.commit()  # our own announcement or an old version: nothing to do
        return
    portfolio.save_model(uow, ModelPortfolio(p.model_id, p.version, p.targets, p.cash_target))


def _on_execution_report(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, ExecutionReportV1)
    trading.apply_execution_report(uow, p)


def _on_settlement(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, SettlementConfirmedV1)
    settling.apply_settlement_confirmation(uow, p)


def _on_rebalance_triggered(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, RebalanceTriggeredV1)
    recommending.recommend(uow, rt.optimizer, uuid.UUID(p.rebalance_id))


def _on_status_updated(rt: Runtime, uow: UnitOfWork, p: Any) -> None:
    assert isinstance(p, StatusUpdatedV1)
    closing.on_status_updated(uow, p, max_rounds=rt.settings.max_remainder_rounds)


HANDLERS: dict[EventType, Callable[[Runtime, UnitOfWork, Any], None]] = {
    EventType.MARKET_DATA: _on_market_data,
    EventType.PORTFOLIO_STATE_UPDATED: _on_portfolio_state,
    EventType.MODEL_CHANGED: _on_model_changed,
    EventType.EXECUTION_REPORT: _on_execution_report,
    EventType.SETTLEMENT_CONFIRMED: _on_settlement,
    EventType.REBALANCE_TRIGGERED: _on_rebalance_triggered,
    EventType.STATUS_UPDATED: _on_status_updated,
}


_LOST_CONNECTION = (
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    sa.exc.DisconnectionError,
    sa.exc.PendingRollbackError,
    ConnectionError,
)
"""Errors that mean the connection under a transaction went away (SQLAlchemy raises
``PendingRollbackError`` when a transaction is used again after its connection died)."""


def infrastructure_error(exc: BaseException) -> bool:
    """Whether a handler error means the database is unreachable (or restarting), not that the
    event is bad: lost or refused connections, crash recovery, an exhausted pool, deadlocks and
    serialization failures, also when another exception was raised while handling one of those
    (its ``__cause__`` / ``__context__`` chain). The consumer loop retries these without
    dead-lettering. A business refusal (``RebalancerError``) never is."""
    if isinstance(exc, RebalancerError):
        return False
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 16:
        seen.add(id(cur))
        if is_transient(cur) or isinstance(cur, _LOST_CONNECTION):
            return True
        if isinstance(cur, sa.exc.DBAPIError) and cur.connection_invalidated:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _without_effect(rt: Runtime, env: Envelope, payload: Any) -> bool:
    """Events that cannot have an effect, dropped before any transaction (most status events:
    only a rebalance ending partly done matters to the service)."""
    if env.type == EventType.STATUS_UPDATED:
        assert isinstance(payload, StatusUpdatedV1)
        return not closing.acts_on(payload, max_rounds=rt.settings.max_remainder_rounds)
    return False


def handle_event(rt: Runtime, env: Envelope) -> None:
    """Handle one inbound event exactly once (idempotent by ``event_id``)."""
    payload = parse_payload(env)  # MalformedEvent -> dead letter
    if _without_effect(rt, env, payload):
        EVENTS.labels(str(env.type), "ignored").inc()
        return

    def attempt() -> None:
        with UnitOfWork(rt.engine, env.tenant_id) as uow:
            if not uow.processed.first_time(SERVICE_CONSUMER, env.event_id):
                EVENTS.labels(str(env.type), "duplicate").inc()
                log.debug("event.duplicate", event_id=str(env.event_id), type=str(env.type))
                return
            HANDLERS[env.type](rt, uow, payload)
            uow.commit()  # no-op if the handler committed; commits the processed mark otherwise
            log.debug("event.handled", event_id=str(env.event_id), type=str(env.type))

    try:
        with_retries(attempt)
    except Exception:
        EVENTS.labels(str(env.type), "error").inc()
        raise
    EVENTS.labels(str(env.type), "ok").inc()
    if env.type == EventType.EXECUTION_REPORT:  # how late the venue's answers are read
        read_lag(rt.engine).observe(env.occurred_at)


class Worker:
    """Consumer threads (and optionally the outbox relay) of one worker process.

    Parameters
    ----------
    rt
        The process runtime.
    threads
        Consumer loops on the Shared subscription (each processes one event at a time).
    with_relay
        Also run the outbox relay in this process.
    batch_threads
        Consumer loops of batch-rebalance items (chunks of accounts; see
        :mod:`rebalancer.entrypoints.batch_worker`). One per process suits CPU-bound solving.
    solver
        Solver chain of the batch loops (``fast`` or ``clarabel``; default
        :func:`~rebalancer.entrypoints.batch_worker.default_solver`).

    All consumers of the process come from one
    :class:`~rebalancer.adapters.pulsar_bus.SharedSubscriber`, so their consumer ids are unique
    on the host and any number of worker processes can share the subscriptions, also on the
    embedded pulsar-lite broker. Subscribing is retried with backoff until the broker accepts
    (each attempt logged as ``pulsar.subscribe_retry``); a stop signal meanwhile raises
    :class:`~rebalancer.adapters.pulsar_subscribe.SubscribeCancelled`.
    """

    def __init__(
        self,
        rt: Runtime,
        threads: int = 2,
        with_relay: bool = True,
        batch_threads: int = 1,
        solver: str | None = None,
    ) -> None:
        from rebalancer.entrypoints.batch_worker import BatchConsumerLoop, parse_solver

        self.rt = rt
        # retries every subscribe (a broker restarting, an id a killed predecessor still holds
        # on pulsar-lite) until it succeeds or the process is told to stop
        self.subscriber = SharedSubscriber(
            rt.infra.pulsar_url, rt.settings.data_dir, stop=rt.stop_event
        )
        try:
            self.batch_loops = [
                BatchConsumerLoop(
                    rt,
                    max_redeliveries=rt.settings.consumer_max_redeliveries,
                    name=f"batch-{i}",
                    solver=parse_solver(solver) if solver else None,
                    subscriber=self.subscriber,
                )
                for i in range(batch_threads)
            ]
            topics = sorted({TOPICS[t] for t in SERVICE_TYPES})
            self.loops = [
                ConsumerLoop(
                    self.subscriber,
                    rt.publisher,
                    topics,
                    rt.settings.subscription,
                    lambda env: handle_event(rt, env),
                    max_redeliveries=rt.settings.consumer_max_redeliveries,
                    name=f"service-{i}",
                    is_transient=infrastructure_error,
                )
                for i in range(threads)
            ]
        except BaseException:
            self.subscriber.close()
            raise
        self.relay = OutboxRelay(rt.engine, rt.publisher, rt.settings.outbox_batch_size)
        self.with_relay = with_relay
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        stop = self.rt.stop_event
        targets: list[tuple[str, Callable[[], None]]] = [
            (loop.name, functools.partial(loop.run, stop)) for loop in self.loops
        ]
        for b in self.batch_loops:
            targets.append((b.name, functools.partial(b.run, stop)))
        if self.with_relay:
            targets.append(("relay", lambda: self.relay.run(stop)))
            sweeper = OrderSweeper.from_settings(self.rt.engine, self.rt.settings)
            targets.append(("order-sweeper", lambda: sweeper.run(stop)))
        for name, fn in targets:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("worker.started", consumers=len(self.loops), relay=self.with_relay)

    def join(self, timeout_s: float = 15.0) -> None:
        """Wait for the threads (they stop with ``rt.stop_event``), then close the consumers'
        client and free the process's consumer slot."""
        for t in self._threads:
            t.join(timeout_s)
        self.subscriber.close()
