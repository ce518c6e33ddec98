"""Simulated counterparties on the real Pulsar contracts: market-data feed, execution venue and
settlement agent. They talk to the service only through topics, exactly as real ones would."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import structlog

from rebalancer.adapters.pulsar_bus import ConsumerLoop, Publisher
from rebalancer.bootstrap import Runtime
from rebalancer.contracts import (
    TOPICS,
    Envelope,
    EventType,
    ExecutionReportV1,
    MarketDataV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    encode,
    new_event,
    parse_payload_as,
)
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.simulators.market import PriceFeed
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue

log = structlog.get_logger(__name__)

MARKET_TENANT = "market"
"""Tenant id carried by market-data events (prices are global; the service fans out)."""


class Counterparties:
    """Runs the three simulators against the broker.

    Parameters
    ----------
    rt
        Runtime (Pulsar client and publisher).
    feed
        Price feed; :meth:`step_market` publishes its next day.
    venue
        Execution venue simulator.
    agent
        Settlement agent simulator.
    settlement_days
        Instrument -> T+n (default 1).
    """

    def __init__(
        self,
        rt: Runtime,
        feed: PriceFeed,
        venue: SimulatedVenue | None = None,
        agent: SettlementAgent | None = None,
        settlement_days: Mapping[str, int] | None = None,
    ) -> None:
        self.rt = rt
        self.feed = feed
        self.publisher: Publisher = rt.publisher
        self.venue = venue or SimulatedVenue(seed=11, clock=self._venue_time)
        self.agent = agent or SettlementAgent(seed=13)
        self.settlement_days = dict(settlement_days or {})
        self._lock = threading.Lock()
        self._tenant_of: dict[str, str] = {}
        self._tick = 0
        self.reports_sent = 0
        self.settlements_sent = 0
        self._loops = [
            ConsumerLoop(
                rt.client,
                rt.publisher,
                [TOPICS[EventType.ORDER_PLACED]],
                "sim-venue",
                self._on_order,
                name="sim-venue",
            ),
            ConsumerLoop(
                rt.client,
                rt.publisher,
                [TOPICS[EventType.EXECUTION_REPORT]],
                "sim-custodian",
                self._on_report,
                name="sim-custodian",
            ),
        ]
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ clock and market
    def _venue_time(self) -> datetime:
        self._tick += 1
        base = datetime.combine(self.feed.as_of, time(14, 30), tzinfo=UTC)
        return base + timedelta(seconds=self._tick)

    @property
    def market_date(self) -> date:
        """The feed's current trading date."""
        return self.feed.as_of

    def step_market(self) -> MarketDataV1:
        """Advance the feed one trading day and publish its bars; resting orders may fill."""
        with self._lock:
            data = self.feed.next_market_data()
            env = new_event(EventType.MARKET_DATA, data, tenant_id=MARKET_TENANT, key="market")
            self.publisher.publish(TOPICS[EventType.MARKET_DATA], "market", encode(env))
            self._send_reports(self.venue.on_market({b.instrument: b.close for b in data.bars}))
        return data

    def end_of_day(self) -> int:
        """Expire every resting day order (reports go out as ``expired``)."""
        with self._lock:
            reports = self.venue.end_of_day()
            self._send_reports(reports)
        return len(reports)

    # ------------------------------------------------------------------ venue
    def _on_order(self, env: Envelope) -> None:
        with self._lock:
            if env.type == EventType.ORDER_PLACED:
                order = parse_payload_as(env, OrderPlacedV1)
                self._tenant_of[order.order_id] = env.tenant_id
                price = self.feed.current_prices().get(order.instrument, order.arrival_price)
                reports = self.venue.handle_order(order, price)
            elif env.type == EventType.ORDER_CANCEL_REQUESTED:
                reports = self.venue.handle_cancel(parse_payload_as(env, OrderCancelRequestedV1))
            else:
                return
            self._send_reports(reports)

    def _send_reports(self, reports: list[ExecutionReportV1]) -> None:
        topic = TOPICS[EventType.EXECUTION_REPORT]
        for r in reports:
            env = new_event(
                EventType.EXECUTION_REPORT,
                r,
                tenant_id=self._tenant_of.get(r.order_id, MARKET_TENANT),
                key=r.account_id,
                correlation_id=r.order_id,
            )
            self.publisher.publish(topic, r.account_id, encode(env))
            self.reports_sent += 1

    # ------------------------------------------------------------------ custodian
    def _on_report(self, env: Envelope) -> None:
        report = parse_payload_as(env, ExecutionReportV1)
        if not report.kind.is_fill or report.fill_quantity <= Decimal(0):
            return
        if report.account_id == BLOCK_ACCOUNT_ID:  # a block: only its allocations settle
            return
        days = self.settlement_days.get(report.instrument, 1)
        conf = self.agent.settle(report, report.venue_time.date(), days)
        out = new_event(
            EventType.SETTLEMENT_CONFIRMED,
            conf,
            tenant_id=env.tenant_id,
            key=conf.account_id,
            correlation_id=conf.order_id,
            event_id=None,
        )
        self.publisher.publish(TOPICS[EventType.SETTLEMENT_CONFIRMED], conf.account_id, encode(out))
        self.settlements_sent += 1

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        stop = self.rt.stop_event
        for loop in self._loops:
            t = threading.Thread(target=loop.run, args=(stop,), name=loop.name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("simulators.started")

    def join(self, timeout_s: float = 10.0) -> None:
        for t in self._threads:
            t.join(timeout_s)
