"""The order and its lifecycle: statuses, the state machine and execution reports.

Units
-----
Quantities are :class:`~decimal.Decimal` shares; prices are :class:`~decimal.Decimal` account
currency per share; basis points (``_bps``) are 1/10,000.

State machine
-------------
:data:`TRANSITIONS` lists every legal status change. Reports from the venue are the source of
truth for the order's progress, so :func:`apply_report` accepts them in any order and at most
once each (by ``report_id`` and by ``sequence``), and never lets ``filled_quantity`` exceed
``quantity``. A report that arrives after the order is terminal (e.g. a fill after a cancel) is
*late*: the status stays, but a late fill's shares are still recorded (they did trade and must
settle) and counted in ``late_filled_quantity`` so that reconciliation can flag them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from rebalancer.domain.errors import IllegalTransition, InvalidInput

ZERO = Decimal(0)
CENT = Decimal("0.01")
_ORDER_NAMESPACE = uuid.UUID("6f1b7f3e-3c1a-5d0e-9a57-2b8f0c4e7d11")


class OrderStatus(enum.StrEnum):
    """Lifecycle status of an order."""

    NEW = "new"
    SENT = "sent"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """Whether no further status change is possible."""
        return self in TERMINAL


TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
_S = OrderStatus
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    # NEW may jump ahead: reports can arrive before the "sent" mark is stored.
    _S.NEW: frozenset(
        {_S.SENT, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}
    ),
    _S.SENT: frozenset(
        {_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_REQUESTED, _S.CANCELLED, _S.REJECTED, _S.EXPIRED}
    ),
    _S.PARTIALLY_FILLED: frozenset(
        {_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_REQUESTED, _S.CANCELLED, _S.EXPIRED}
    ),
    # Fills may still arrive while a cancel is pending; a cancel reject returns to working.
    _S.CANCEL_REQUESTED: frozenset(
        {
            _S.CANCEL_REQUESTED,
            _S.SENT,
            _S.PARTIALLY_FILLED,
            _S.FILLED,
            _S.CANCELLED,
            _S.REJECTED,
            _S.EXPIRED,
        }
    ),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
}
"""Legal ``from -> {to}`` status changes. ``REJECTED`` is further refused once shares filled."""


class Side(enum.StrEnum):
    """Buy or sell."""

    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """Market or limit order."""

    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(enum.StrEnum):
    """How long an order works: the trading day, good till cancelled, immediate or cancel."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"


class ReportKind(enum.StrEnum):
    """Kind of execution report from the venue."""

    ACK = "ack"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CANCEL_REJECTED = "cancel_rejected"
    """The venue refused our cancel request; the order keeps working."""


class ReportOutcome(enum.StrEnum):
    """What :func:`apply_report` did with a report."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED_LATE = "ignored_late"
    """The report arrived after a terminal status or after a newer report: the status did not
    change, but a fill's shares were recorded (see ``Order.late_filled_quantity``)."""
    REJECTED_UNKNOWN = "rejected_unknown"
    """The report names another (or an unknown) order; nothing changed."""


Lots = tuple[tuple[str, Decimal], ...]
"""``((lot_id, shares), ...)`` to sell, in the order they should be used."""


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """One report from the venue about one order.

    Attributes
    ----------
    fill_quantity, fill_price
        Shares and price of this report's fill (partial_fill / fill only).
    cumulative_quantity
        Total shares filled so far according to the venue, if it says so.
    sequence
        Venue sequence number per order (higher is newer), if it sends one.
    """

    report_id: str
    order_id: str
    kind: ReportKind
    fill_quantity: Decimal = ZERO
    fill_price: Decimal | None = None
    cumulative_quantity: Decimal | None = None
    sequence: int | None = None
    reason: str = ""


@dataclass(slots=True)
class Order:
    """An order for one account and instrument, produced from one recommendation.

    ``(recommendation_id, account_id, instrument)`` is its natural key; :func:`order_id_for`
    derives a deterministic ``order_id`` from it so retries cannot create a second order.
    ``wave`` 0 is sent at once; wave 1 (buys when cash is short) after wave 0 has filled.
    """

    order_id: str
    recommendation_id: str
    account_id: str
    instrument: str
    side: Side
    quantity: Decimal
    filled_quantity: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    status: OrderStatus = OrderStatus.NEW
    lots: Lots = ()
    limit_price: Decimal | None = None
    arrival_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    applied_report_ids: list[str] = field(default_factory=list)
    applied_sequences: list[int] = field(default_factory=list)
    filled_notional: Decimal = ZERO
    """Sum of ``fill_quantity * fill_price`` over applied fills (currency)."""
    priced_quantity: Decimal = ZERO
    """Sum of ``fill_quantity`` over applied fills (denominator of ``avg_fill_price``)."""
    late_filled_quantity: Decimal = ZERO
    wave: int = 0
    block_id: str | None = None

    @property
    def order_type(self) -> OrderType:
        """``LIMIT`` when a limit price is set, else ``MARKET``."""
        return OrderType.MARKET if self.limit_price is None else OrderType.LIMIT

    @property
    def remaining_quantity(self) -> Decimal:
        """Shares not yet filled."""
        return self.quantity - self.filled_quantity

    @property
    def last_sequence(self) -> int | None:
        """Highest venue sequence applied so far."""
        return max(self.applied_sequences) if self.applied_sequences else None


def order_id_for(recommendation_id: str, account_id: str, instrument: str) -> str:
    """Deterministic order id (UUID5) of the key ``(recommendation, account, instrument)``."""
    return str(uuid.uuid5(_ORDER_NAMESPACE, f"{recommendation_id}|{account_id}|{instrument}"))


def transition(order: Order, to: OrderStatus) -> None:
    """Move ``order`` to status ``to`` (same status is a no-op), or raise.

    Raises
    ------
    IllegalTransition
        ``to`` is not in ``TRANSITIONS[order.status]``, or ``to`` is ``REJECTED`` after fills.
    """
    if to == order.status:
        return
    if to not in TRANSITIONS[order.status] or (
        to == OrderStatus.REJECTED and order.filled_quantity > 0
    ):
        raise IllegalTransition(
            f"order {order.order_id} cannot go from {order.status} to {to}",
            [f"orders.{order.order_id}.status"],
        )
    order.status = to


def mark_sent(order: Order) -> None:
    """Record that the order was handed to the venue (only from ``NEW``)."""
    if order.status != OrderStatus.NEW:
        raise IllegalTransition(
            f"order {order.order_id} is {order.status}; only a new order can be sent",
            [f"orders.{order.order_id}.status"],
        )
    transition(order, OrderStatus.SENT)


def request_cancel(order: Order) -> None:
    """Ask to cancel: a never-sent order is cancelled at once, a working one awaits the venue."""
    if order.status == OrderStatus.NEW:
        transition(order, OrderStatus.CANCELLED)
    elif order.status != OrderStatus.CANCEL_REQUESTED:
        transition(order, OrderStatus.CANCEL_REQUESTED)


def _check_report(order: Order, report: ExecutionReport) -> None:
    fields = [f"reports.{report.report_id}"]
    if report.kind in (ReportKind.PARTIAL_FILL, ReportKind.FILL):
        if report.fill_quantity < 0 or (
            report.kind == ReportKind.PARTIAL_FILL and report.fill_quantity == 0
        ):
            raise InvalidInput(f"fill quantity {report.fill_quantity} must be > 0", fields)
        if report.fill_quantity > 0 and (report.fill_price is None or report.fill_price <= 0):
            raise InvalidInput(f"fill price {report.fill_price} must be given and > 0", fields)
    cum = report.cumulative_quantity
    new_priced = order.priced_quantity + report.fill_quantity
    if (cum is not None and cum > order.quantity) or new_priced > order.quantity:
        raise IllegalTransition(
            f"report {report.report_id} would fill {max(cum or ZERO, new_priced)} of "
            f"order {order.order_id} for {order.quantity} shares (overfill)",
            fields,
        )


def apply_report(order: Order, report: ExecutionReport) -> ReportOutcome:
    """Apply one execution report to ``order`` in place, at most once.

    Parameters
    ----------
    order
        The order; mutated only when the outcome is ``APPLIED`` or ``IGNORED_LATE``.
    report
        The venue's report.

    Returns
    -------
    ReportOutcome
        ``REJECTED_UNKNOWN`` for another order's report, ``DUPLICATE`` for a report id or
        sequence already applied, ``IGNORED_LATE`` for a report after a terminal status (status
        kept, a fill's shares recorded) or one behind the order's progress (an ack after a fill,
        a cancel reject when no cancel is pending), else ``APPLIED``.

    Notes
    -----
    Out-of-order fills are reconciled by quantities: ``filled_quantity`` is the largest of the
    venue's ``cumulative_quantity`` and the sum of applied ``fill_quantity``; a ``FILL`` without
    a cumulative quantity means the venue says the order is complete. The status after a fill is
    derived from ``filled_quantity`` (``FILLED`` iff it equals ``quantity``).

    Raises
    ------
    IllegalTransition
        Overfill, or a reject after shares were filled. The order is left unchanged.
    InvalidInput
        A fill without a positive quantity or with a non-positive price.
    """
    if report.order_id != order.order_id:
        return ReportOutcome.REJECTED_UNKNOWN
    if report.report_id in order.applied_report_ids or (
        report.sequence is not None and report.sequence in order.applied_sequences
    ):
        return ReportOutcome.DUPLICATE
    _check_report(order, report)
    target = _target_status(order, report)
    late = order.status.terminal
    if target == OrderStatus.REJECTED and order.filled_quantity > 0 and not late:
        transition(order, target)  # raises: a filled order cannot be rejected
    # validated: from here on nothing raises, so the order is changed all or nothing
    is_fill = report.kind in (ReportKind.PARTIAL_FILL, ReportKind.FILL)
    before = order.filled_quantity
    if is_fill:
        _record_fill(order, report)
    if late:
        if order.status != OrderStatus.FILLED:
            order.late_filled_quantity += order.filled_quantity - before
        outcome = ReportOutcome.IGNORED_LATE
    elif is_fill:  # status from quantities, which may have arrived out of order
        order.status = _checked(order, _fill_status(order))
        outcome = ReportOutcome.APPLIED
    elif target is None:
        outcome = ReportOutcome.IGNORED_LATE
    else:
        order.status = _checked(order, target)
        outcome = ReportOutcome.APPLIED
    order.applied_report_ids.append(report.report_id)
    if report.sequence is not None:
        order.applied_sequences.append(report.sequence)
    return outcome


def _checked(order: Order, to: OrderStatus) -> OrderStatus:
    if to != order.status and to not in TRANSITIONS[order.status]:
        raise IllegalTransition(
            f"order {order.order_id} cannot go from {order.status} to {to}",
            [f"orders.{order.order_id}.status"],
        )
    return to


def _target_status(order: Order, report: ExecutionReport) -> OrderStatus | None:
    """Status the report asks for, or ``None`` when it is behind the order's progress."""
    k = report.kind
    if k == ReportKind.ACK:
        return OrderStatus.SENT if order.status in (OrderStatus.NEW, OrderStatus.SENT) else None
    if k == ReportKind.CANCEL_REJECTED:
        if order.status != OrderStatus.CANCEL_REQUESTED:
            return None
        return OrderStatus.PARTIALLY_FILLED if order.filled_quantity > 0 else OrderStatus.SENT
    if k in (ReportKind.PARTIAL_FILL, ReportKind.FILL):
        return OrderStatus.PARTIALLY_FILLED
    return {
        ReportKind.REJECTED: OrderStatus.REJECTED,
        ReportKind.CANCELLED: OrderStatus.CANCELLED,
        ReportKind.EXPIRED: OrderStatus.EXPIRED,
    }[k]


def _fill_status(order: Order) -> OrderStatus:
    if order.filled_quantity >= order.quantity:
        return OrderStatus.FILLED
    if order.status == OrderStatus.CANCEL_REQUESTED:
        return OrderStatus.CANCEL_REQUESTED
    return OrderStatus.PARTIALLY_FILLED


def _record_fill(order: Order, report: ExecutionReport) -> None:
    if report.fill_price is not None and report.fill_quantity > 0:  # checked: price given
        order.filled_notional += report.fill_quantity * report.fill_price
        order.priced_quantity += report.fill_quantity
        order.avg_fill_price = order.filled_notional / order.priced_quantity
    cum = report.cumulative_quantity
    filled = max(order.filled_quantity, order.priced_quantity, cum or ZERO)
    if report.kind == ReportKind.FILL and cum is None:
        filled = order.quantity  # the venue says the order is complete
    order.filled_quantity = min(filled, order.quantity)


def route_report(orders: Mapping[str, Order], report: ExecutionReport) -> ReportOutcome:
    """Apply ``report`` to the order it names; ``REJECTED_UNKNOWN`` if no such order exists."""
    order = orders.get(report.order_id)
    if order is None:
        return ReportOutcome.REJECTED_UNKNOWN
    return apply_report(order, report)


def implementation_shortfall_bps(order: Order) -> float | None:
    """Cost of the fills against the arrival price, in basis points (positive = worse).

    ``(avg_fill - arrival) / arrival * 10_000`` for buys, the negative for sells; ``None``
    without fills or an arrival price. The fill rate is ``filled_quantity / quantity``.
    """
    if order.avg_fill_price is None or not order.arrival_price:
        return None
    sign = 1 if order.side == Side.BUY else -1
    diff = (order.avg_fill_price - order.arrival_price) / order.arrival_price
    return float(sign * diff * 10_000)
