"""Payload models (version 1) of the events the service consumes.

Inbound events come from upstream systems (book of record, model management, market data) and
from counterparties (execution venue, settlement agent). Units are described in
:mod:`rebalancer.contracts.types`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rebalancer.contracts.types import (
    EventType,
    Identifier,
    NonNegativeFraction,
    NonNegativeMoney,
    NonNegativeShares,
    Payload,
    Price,
    ReportKind,
    SettlementStatus,
    Shares,
    Side,
    UtcDatetime,
)
from rebalancer.domain.model import CASH, WEIGHT_TOLERANCE, ModelPortfolio, TaxLot


def field_error(field: str, detail: str) -> PydanticCustomError:
    """A validation error that names ``field`` (used by cross-field validators).

    Pydantic gives errors raised in model validators an empty location; the field travels in
    the error context instead and :func:`rebalancer.contracts.events.parse_payload` reports it.
    """
    return PydanticCustomError(
        "invalid_field", "{field}: {detail}", {"field": field, "detail": detail}
    )


# --------------------------------------------------------------------------- portfolio state
class LotV1(Payload):
    """One tax lot of a portfolio state.

    Attributes
    ----------
    lot_id
        Unique id of the lot within the account.
    instrument
        Instrument id (ticker).
    quantity
        Shares held, > 0.
    cost_basis
        Cost basis per share in account currency, >= 0.
    acquired
        Trade date of the purchase.
    """

    lot_id: Identifier
    instrument: Identifier
    quantity: Shares
    cost_basis: NonNegativeMoney
    acquired: date

    def to_domain(self) -> TaxLot:
        """The domain :class:`~rebalancer.domain.model.TaxLot`."""
        return TaxLot(self.lot_id, self.instrument, self.quantity, self.cost_basis, self.acquired)


class PortfolioStateUpdatedV1(Payload):
    """The book of record's holdings of one account.

    Attributes
    ----------
    account_id
        The account.
    as_of
        Business date the state is valid for.
    cash
        Settled cash in account currency, >= 0.
    lots
        Open tax lots (lot ids unique, acquired on or before ``as_of``).
    replace
        ``True`` (default): the lots replace all lots held; ``False``: they are upserted by id.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.PORTFOLIO_STATE_UPDATED
    VERSION: ClassVar[int] = 1

    account_id: Identifier
    as_of: date
    cash: NonNegativeMoney
    lots: list[LotV1] = Field(default_factory=list)
    replace: bool = True

    @model_validator(mode="after")
    def _check_lots(self) -> Self:
        seen: set[str] = set()
        for i, lot in enumerate(self.lots):
            if lot.lot_id in seen:
                raise field_error(f"lots.{i}.lot_id", f"duplicate lot id {lot.lot_id!r}")
            seen.add(lot.lot_id)
            if lot.acquired > self.as_of:
                raise field_error(
                    f"lots.{i}.acquired",
                    f"lot acquired {lot.acquired} after the state's as_of {self.as_of}",
                )
        return self


# --------------------------------------------------------------------------- model change
class ModelChangedV1(Payload):
    """A new version of a model portfolio.

    Attributes
    ----------
    model_id
        Model id, stable across versions.
    version
        Model version, >= 1, increasing by one per change.
    targets
        Instrument id -> target weight (fraction of the sleeve, >= 0), cash excluded.
    cash_target
        Target cash weight (fraction, >= 0). ``sum(targets) + cash_target`` is 1 within 1e-6.
    name
        Human name of the model.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.MODEL_CHANGED
    VERSION: ClassVar[int] = 1

    model_id: Identifier
    version: int = Field(ge=1)
    targets: dict[Identifier, NonNegativeFraction]
    cash_target: NonNegativeFraction = 0.0
    name: str = ""

    @field_validator("targets")
    @classmethod
    def _no_cash_key(cls, value: dict[str, float]) -> dict[str, float]:
        if CASH in value:
            raise ValueError(f"targets must not contain {CASH!r}; use cash_target")
        return value

    @model_validator(mode="after")
    def _sum_to_one(self) -> Self:
        total = sum(self.targets.values()) + self.cash_target
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise field_error(
                "targets",
                f"targets plus cash_target sum to {total:.8f}; they must sum to 1 "
                f"within {WEIGHT_TOLERANCE:g}",
            )
        return self

    def to_domain(self) -> ModelPortfolio:
        """The domain :class:`~rebalancer.domain.model.ModelPortfolio`."""
        return ModelPortfolio(
            self.model_id, self.version, dict(self.targets), self.cash_target, self.name
        )


# --------------------------------------------------------------------------- market data
class BarV1(Payload):
    """One instrument's daily bar.

    Attributes
    ----------
    instrument
        Instrument id.
    close
        Closing price, currency per share, > 0.
    volume
        Shares traded that day, if known.
    adv_shares
        Average daily volume in shares (e.g. over 20 days), if known.
    daily_volatility
        Standard deviation of daily returns as a fraction (0.015 = 1.5 %/day), if known.
    half_spread_bps
        Half the bid-ask spread in basis points of the price, if known.
    """

    instrument: Identifier
    close: Price
    volume: NonNegativeShares | None = None
    adv_shares: NonNegativeShares | None = None
    daily_volatility: NonNegativeFraction | None = None
    half_spread_bps: NonNegativeFraction | None = None


class MarketDataV1(Payload):
    """Closing prices (and liquidity estimates) of one business date.

    Attributes
    ----------
    as_of
        The business date of the bars.
    bars
        At least one bar, instruments unique.
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.MARKET_DATA
    VERSION: ClassVar[int] = 1

    as_of: date
    bars: list[BarV1] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for i, bar in enumerate(self.bars):
            if bar.instrument in seen:
                raise field_error(f"bars.{i}.instrument", f"duplicate bar for {bar.instrument}")
            seen.add(bar.instrument)
        return self

    def closes(self) -> dict[str, Decimal]:
        """Instrument id -> closing price (currency per share)."""
        return {bar.instrument: bar.close for bar in self.bars}


# --------------------------------------------------------------------------- execution report
class ExecutionReportV1(Payload):
    """A venue's report on one order.

    Per order, ``sequence`` starts at 1 (the ``ack``) and increases by one per report;
    ``cumulative_quantity`` is the total filled so far, including this report's
    ``fill_quantity``. Consumers must tolerate duplicates (same ``report_id``) and reports out
    of order (use ``sequence``).

    Attributes
    ----------
    report_id
        Unique id of the report (a redelivered report keeps its id).
    order_id, account_id, instrument, side
        The order reported on.
    kind
        ``ack``, ``partial_fill``, ``fill`` (the order is now completely filled), ``rejected``,
        ``cancelled`` or ``expired`` (the unfilled remainder is gone).
    fill_quantity
        Shares executed by this report (> 0 for fills, 0 otherwise).
    fill_price
        Execution price in currency per share; required for fills, absent otherwise.
    cumulative_quantity
        Shares executed on the order so far, this report included.
    sequence
        Position of the report in the order's report stream, from 1.
    reason
        Why, for ``rejected``, ``cancelled`` and ``expired`` (required for ``rejected``).
    venue_time
        When the venue produced the report (UTC).
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.EXECUTION_REPORT
    VERSION: ClassVar[int] = 1

    report_id: Identifier
    order_id: Identifier
    account_id: Identifier
    instrument: Identifier
    side: Side
    kind: ReportKind
    fill_quantity: NonNegativeShares = Decimal(0)
    fill_price: Price | None = None
    cumulative_quantity: NonNegativeShares = Decimal(0)
    sequence: int = Field(ge=1)
    reason: str | None = None
    venue_time: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind.is_fill:
            if self.fill_quantity <= 0:
                raise field_error("fill_quantity", f"a {self.kind} must fill more than 0 shares")
            if self.fill_price is None:
                raise field_error("fill_price", f"a {self.kind} needs a fill_price")
        else:
            if self.fill_quantity != 0:
                raise field_error("fill_quantity", f"a {self.kind} report fills no shares")
            if self.fill_price is not None:
                raise field_error("fill_price", f"a {self.kind} report has no fill_price")
        if self.cumulative_quantity < self.fill_quantity:
            raise field_error(
                "cumulative_quantity",
                f"cumulative_quantity {self.cumulative_quantity} is less than this report's "
                f"fill_quantity {self.fill_quantity}",
            )
        if self.kind is ReportKind.REJECTED and not self.reason:
            raise field_error("reason", "a rejected report needs a reason")
        return self


# --------------------------------------------------------------------------- settlement
class SettlementConfirmedV1(Payload):
    """The settlement agent's confirmation (or failure) of one fill.

    Attributes
    ----------
    settlement_id
        Unique id of the settlement (stable for a given fill).
    report_id
        The execution report (``partial_fill`` or ``fill``) this settles.
    order_id, account_id, instrument, side
        The order the fill belongs to.
    quantity
        Shares delivered, > 0.
    price
        Price in currency per share, > 0; cash moves by ``quantity * price``.
    trade_date, settle_date
        Business dates; ``settle_date >= trade_date``.
    status
        ``settled`` or ``failed``.
    reason
        Why it failed (required when ``failed``).
    """

    EVENT_TYPE: ClassVar[EventType] = EventType.SETTLEMENT_CONFIRMED
    VERSION: ClassVar[int] = 1

    settlement_id: Identifier
    report_id: Identifier
    order_id: Identifier
    account_id: Identifier
    instrument: Identifier
    side: Side
    quantity: Shares
    price: Price
    trade_date: date
    settle_date: date
    status: SettlementStatus = SettlementStatus.SETTLED
    reason: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.settle_date < self.trade_date:
            raise field_error(
                "settle_date",
                f"settle_date {self.settle_date} is before trade_date {self.trade_date}",
            )
        if self.status is SettlementStatus.FAILED and not self.reason:
            raise field_error("reason", "a failed settlement needs a reason")
        return self

    @property
    def gross_amount(self) -> Decimal:
        """``quantity * price`` in currency (cash paid for a buy, received for a sell)."""
        return self.quantity * self.price
