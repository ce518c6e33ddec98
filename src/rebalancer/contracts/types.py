"""Shared field types and enumerations of the event contract.

Units
-----
- Shares (``quantity``, ``volume``, ``adv_shares``) are :class:`~decimal.Decimal` numbers of
  shares, serialized as JSON strings (``"12"``, ``"0.5"``) so that no precision is lost.
- Money (``cash``, ``price``, ``cost_basis``, ``value``) is :class:`~decimal.Decimal` in the
  account currency, also serialized as JSON strings.
- Weights, drifts, bands and volatilities are ``float`` fractions (``0.05`` = 5 %).
- Dates are ISO ``YYYY-MM-DD``; timestamps are ISO 8601 with an explicit offset and are
  normalized to UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

# One definition of these order enums: the domain's (same values on the wire).
from rebalancer.domain.order_lifecycle import OrderType as OrderType
from rebalancer.domain.order_lifecycle import Side as Side
from rebalancer.domain.order_lifecycle import TimeInForce as TimeInForce


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""A non-empty id or symbol (at most 200 characters, surrounding whitespace stripped)."""

UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, normalized to UTC (naive timestamps are rejected)."""

Shares = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
"""A strictly positive number of shares."""

NonNegativeShares = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""A number of shares that may be zero."""

Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
"""A strictly positive price in currency per share."""

Money = Annotated[Decimal, Field(allow_inf_nan=False)]
"""An amount of currency that may be negative (e.g. a net benefit)."""

NonNegativeMoney = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""An amount of currency >= 0."""

Fraction = Annotated[float, Field(allow_inf_nan=False)]
"""A float fraction (0.01 = 1 %), finite, may be negative."""

NonNegativeFraction = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite float fraction >= 0."""


class EventType(enum.StrEnum):
    """The type of an event; with ``version`` it selects the payload model."""

    PORTFOLIO_STATE_UPDATED = "portfolio_state_updated"
    MODEL_CHANGED = "model_changed"
    MARKET_DATA = "market_data"
    EXECUTION_REPORT = "execution_report"
    SETTLEMENT_CONFIRMED = "settlement_confirmed"
    DRIFT_ALERT = "drift_alert"
    REBALANCE_TRIGGERED = "rebalance_triggered"
    RECOMMENDATION_CREATED = "recommendation_created"
    ORDER_PLACED = "order_placed"
    ORDER_CANCEL_REQUESTED = "order_cancel_requested"
    STATUS_UPDATED = "status_updated"


class ReportKind(enum.StrEnum):
    """Kind of an execution report.

    ``fill``, ``rejected``, ``cancelled`` and ``expired`` are final: no report follows them.
    """

    ACK = "ack"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """Whether no further report follows for the order."""
        return self not in (ReportKind.ACK, ReportKind.PARTIAL_FILL)

    @property
    def is_fill(self) -> bool:
        """Whether the report carries an execution (shares changed hands)."""
        return self in (ReportKind.PARTIAL_FILL, ReportKind.FILL)


class SettlementStatus(enum.StrEnum):
    """Outcome of a settlement."""

    SETTLED = "settled"
    FAILED = "failed"


class Severity(enum.StrEnum):
    """Severity of a drift alert."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(enum.StrEnum):
    """Whether a drift alert starts (``raised``) or ends (``cleared``)."""

    RAISED = "raised"
    CLEARED = "cleared"


class Decision(enum.StrEnum):
    """What a recommendation decided."""

    REBALANCE = "rebalance"
    NO_TRADE = "no_trade"


class StatusEntity(enum.StrEnum):
    """The kind of entity a status update is about."""

    ORDER = "order"
    REBALANCE = "rebalance"
    SETTLEMENT = "settlement"


class Payload(BaseModel):
    """Base class of every event payload model.

    Payloads are immutable, ignore unknown fields (so that additive changes of a later producer
    do not break an older consumer) and reject NaN or infinite numbers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    EVENT_TYPE: ClassVar[EventType]
    """The event type this payload belongs to (set by each subclass)."""
    VERSION: ClassVar[int]
    """The payload version (set by each subclass)."""

    def to_json_dict(self) -> dict[str, Any]:
        """The payload as JSON-compatible values (Decimals as strings, dates as ISO strings)."""
        return self.model_dump(mode="json")
