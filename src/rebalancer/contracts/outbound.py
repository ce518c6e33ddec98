"""Payload models (version 1) of the events the service publishes.

Units are described in :mod:`rebalancer.contracts.types`.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Self

from pydantic import Field, model_validator

from rebalancer.contracts.inbound import field_error
from rebalancer.contracts.types import (
    AlertState,
    Decision,
    EventType,
    Fraction,
    Identifier,
    Money,
    NonNegativeFraction,
    NonNegativeMoney,
    OrderType,
    Payload,
    Price,
    Severity,
    Shares,
    Side,
    StatusEntity,
    TimeInForce,
)


class DriftAlertV1(Payload):
    """Drift of one key at one level crossed its band (``raised``) or came back (``cleared``).

    Attributes
    ----------
    account_id
        The account.
    as_of
        Business date of the drift measurement.
    level
        Where drift is measured, e.g. ``"instrument"``, ``"asset_class"``, ``"sector"``,
        ``"sleeve"``, ``"account"``.
    key
        What at that level, e.g. ``"AAPL"``, ``"equity"``, ``"CASH"``.
    drift
        Current weight minus target weight, a signed fraction of NAV (0.031 = +3.1 points).
    band
        Tolerance band the drift is compared with, a fraction >= 0.
    severity
        ``info``, ``warning`` or ``critical``.
    state
        ``raised`` or ``cleared``.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.DRIFT_ALERT
    VERSION: ClassVar[int] = 1

    account_id: Identifier
    as_of: date
    level: Identifier
    key: Identifier
    drift: Fraction
    band: NonNegativeFraction
    severity: Severity
    state: AlertState


class RebalanceTriggeredV1(Payload):
    """A rebalance of one account was started.

    Attributes
    ----------
    account_id
        The account.
    rebalance_id
        Id of the rebalance (the natural key of its recommendation and orders).
    reasons
        Why, at least one, e.g. ``["drift:instrument:AAPL"]``, ``["calendar:2024-Q1"]``,
        ``["manual"]``.
    priority
        Larger runs first; 0 is normal.
    as_of
        Business date the trigger was evaluated for.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.REBALANCE_TRIGGERED
    VERSION: ClassVar[int] = 1

    account_id: Identifier
    rebalance_id: Identifier
    reasons: list[Identifier] = Field(min_length=1)
    priority: int = 0
    as_of: date


class TradeV1(Payload):
    """One proposed trade of a recommendation.

    Attributes
    ----------
    instrument
        Instrument id.
    side
        ``buy`` or ``sell``.
    quantity
        Shares, > 0.
    value
        Estimated value in currency (``quantity`` times the price used), >= 0.
    """

    instrument: Identifier
    side: Side
    quantity: Shares
    value: NonNegativeMoney


class RecommendationCreatedV1(Payload):
    """The optimizer's answer for one rebalance.

    Attributes
    ----------
    recommendation_id
        Id of the recommendation.
    account_id, rebalance_id
        What it answers.
    decision
        ``rebalance`` (``trades`` non-empty) or ``no_trade`` (``trades`` empty).
    trades
        Proposed trades.
    net_benefit
        Estimated benefit minus costs and taxes in currency; may be negative.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.RECOMMENDATION_CREATED
    VERSION: ClassVar[int] = 1

    recommendation_id: Identifier
    account_id: Identifier
    rebalance_id: Identifier
    decision: Decision
    trades: list[TradeV1] = Field(default_factory=list)
    net_benefit: Money

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.decision is Decision.NO_TRADE and self.trades:
            raise field_error("trades", "a no_trade recommendation has no trades")
        if self.decision is Decision.REBALANCE and not self.trades:
            raise field_error("trades", "a rebalance recommendation needs at least one trade")
        return self


class OrderLotV1(Payload):
    """A tax lot a sell order draws from.

    Attributes
    ----------
    lot_id
        The lot.
    quantity
        Shares taken from the lot, > 0.
    """

    lot_id: Identifier
    quantity: Shares


class OrderPlacedV1(Payload):
    """An order sent to the execution venue.

    Attributes
    ----------
    order_id
        Unique id; one order per (recommendation, account, instrument).
    recommendation_id, account_id
        Where it comes from.
    instrument, side
        What and which way.
    quantity
        Shares, > 0.
    order_type
        ``market`` or ``limit``.
    limit_price
        Currency per share; required for ``limit`` orders, absent for ``market``.
    time_in_force
        ``day``, ``gtc`` or ``ioc``.
    lots
        For sells, the tax lots to relieve (quantities sum to ``quantity``); empty means the
        settlement side chooses; must be empty for buys.
    arrival_price
        Price in currency per share when the order was decided (for slippage measurement).
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.ORDER_PLACED
    VERSION: ClassVar[int] = 1

    order_id: Identifier
    recommendation_id: Identifier
    account_id: Identifier
    instrument: Identifier
    side: Side
    quantity: Shares
    order_type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    lots: list[OrderLotV1] = Field(default_factory=list)
    arrival_price: Price

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise field_error("limit_price", "a limit order needs a limit_price")
        if self.order_type is OrderType.MARKET and self.limit_price is not None:
            raise field_error("limit_price", "a market order has no limit_price")
        if self.lots:
            if self.side is Side.BUY:
                raise field_error("lots", "a buy order relieves no lots")
            total = sum((lot.quantity for lot in self.lots), start=self.quantity * 0)
            if total != self.quantity:
                raise field_error(
                    "lots", f"lot quantities sum to {total}, the order quantity is {self.quantity}"
                )
            if len({lot.lot_id for lot in self.lots}) != len(self.lots):
                raise field_error("lots", "a lot appears twice")
        return self


class OrderCancelRequestedV1(Payload):
    """A request to cancel the unfilled remainder of an order.

    Attributes
    ----------
    order_id, account_id
        The order.
    reason
        Why, e.g. ``"user request"``, ``"end of day"``.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.ORDER_CANCEL_REQUESTED
    VERSION: ClassVar[int] = 1

    order_id: Identifier
    account_id: Identifier
    reason: str = Field(min_length=1)


class StatusUpdatedV1(Payload):
    """An order, rebalance or settlement changed status.

    Attributes
    ----------
    entity
        ``order``, ``rebalance`` or ``settlement``.
    entity_id
        Its id.
    account_id
        The account it belongs to.
    status
        The new status, e.g. ``"filled"``.
    previous
        The status before, if any.
    detail
        Human explanation, e.g. a reject reason.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.STATUS_UPDATED
    VERSION: ClassVar[int] = 1

    entity: StatusEntity
    entity_id: Identifier
    account_id: Identifier
    status: Identifier
    previous: str | None = None
    detail: str | None = None
