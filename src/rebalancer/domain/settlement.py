"""Settlement: settlement dates, and settled fills turned into tax lots, realized gains and cash.

Units
-----
Shares and money are :class:`~decimal.Decimal`: shares, account currency, currency per share.
Holding periods are in calendar days; ``long_term_days`` (365) follows
:meth:`~rebalancer.domain.model.TaxLot.is_long_term` (long term when held *more* than 365 days,
counted from the purchase trade date to the sale trade date).

Rules
-----
- A buy creates one new :class:`~rebalancer.domain.model.TaxLot` with id ``fill.fill_id``,
  acquired on the trade date, cost basis per share = price + fee per share.
- A sell reduces the lots it names (specific-lot identification). Without named lots the
  fallback is **highest cost first** (HIFO: smallest realized gain), ties by oldest acquisition
  then lot id. Proceeds per share = price - fee per share. Emptied lots are removed.
- Cash moves by ``-quantity * (price + fee)`` for buys and ``+quantity * (price - fee)`` for
  sells. :attr:`Account.cash` holds *settled* cash, so fills are applied on settlement.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from rebalancer.domain.calendar import BusinessCalendar
from rebalancer.domain.errors import Conflict, InvalidInput
from rebalancer.domain.model import Account, Instrument, TaxLot
from rebalancer.domain.orders import ZERO, Lots, Side

LONG_TERM_DAYS = 365


class Term(enum.StrEnum):
    """Holding-period class of a realized gain."""

    SHORT = "short"
    LONG = "long"


class SettlementStatus(enum.StrEnum):
    """Where a fill is in settlement."""

    PENDING = "pending"
    SETTLED = "settled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SettledFill:
    """A fill confirmed as settled by the custodian.

    Attributes
    ----------
    fill_id
        Unique id of the fill; also the id of the lot a buy creates.
    quantity, price
        Shares (> 0) and price per share (> 0, account currency).
    trade_date
        Date the trade executed (the holding period starts or ends here).
    fee_per_share
        Commission and fees per share (>= 0), added to a buy's basis, deducted from proceeds.
    lots
        For sells, ``((lot_id, shares), ...)`` to reduce; empty means the HIFO fallback.
    """

    fill_id: str
    order_id: str
    account_id: str
    instrument: str
    side: Side
    quantity: Decimal
    price: Decimal
    trade_date: date
    fee_per_share: Decimal = ZERO
    lots: Lots = ()


@dataclass(frozen=True, slots=True)
class RealizedGain:
    """Gain (negative for a loss) realized by selling shares of one lot, in account currency."""

    lot_id: str
    instrument: str
    quantity: Decimal
    cost_basis: Decimal
    """Per share."""
    proceeds: Decimal
    """Per share, net of fees."""
    gain: Decimal
    term: Term
    acquired: date
    sold: date


@dataclass(frozen=True, slots=True)
class SettlementResult:
    """What settling one fill did to the account."""

    fill_id: str
    cash_delta: Decimal
    new_lot: TaxLot | None
    realized: tuple[RealizedGain, ...]

    @property
    def realized_gain(self) -> Decimal:
        """Total realized gain in account currency (0 for buys)."""
        return sum((g.gain for g in self.realized), ZERO)


def settlement_date(
    trade_date: date, instrument: Instrument, calendar: BusinessCalendar | None = None
) -> date:
    """Trade date plus ``instrument.settlement_days`` business days of ``calendar``.

    Weekends and the calendar's holidays are skipped (default: weekends only).
    """
    if instrument.settlement_days < 0:
        raise InvalidInput(
            f"settlement_days of {instrument.id} must be >= 0", ["instrument.settlement_days"]
        )
    cal = calendar or BusinessCalendar()
    return cal.add_business_days(trade_date, instrument.settlement_days)


def settlement_status(
    settle_date: date,
    as_of: date,
    *,
    confirmed: bool,
    calendar: BusinessCalendar | None = None,
    grace_business_days: int = 0,
) -> SettlementStatus:
    """``SETTLED`` once confirmed; ``FAILED`` when unconfirmed more than the grace after the date.

    A failed settlement should be raised as an alert by the caller.
    """
    if confirmed:
        return SettlementStatus.SETTLED
    cal = calendar or BusinessCalendar()
    deadline = cal.add_business_days(settle_date, grace_business_days)
    return SettlementStatus.FAILED if as_of > deadline else SettlementStatus.PENDING


def overdue_since(
    trade_date: date,
    settlement_days: int,
    as_of: date,
    *,
    grace_business_days: int,
    calendar: BusinessCalendar | None = None,
) -> date | None:
    """The expected settlement date of an unconfirmed fill when it is overdue, else ``None``.

    Expected = ``trade_date`` + ``settlement_days`` business days; the fill is overdue once
    ``as_of`` is after the expected date + ``grace_business_days`` business days (the
    custodian's confirmation for the expected date may arrive during the grace).
    """
    if settlement_days < 0 or grace_business_days < 0:
        raise InvalidInput(
            "settlement_days and grace_business_days must be >= 0",
            ["settlement_days", "grace_business_days"],
        )
    cal = calendar or BusinessCalendar()
    expected = cal.add_business_days(trade_date, settlement_days)
    status = settlement_status(
        expected, as_of, confirmed=False, calendar=cal, grace_business_days=grace_business_days
    )
    return expected if status == SettlementStatus.FAILED else None


def hifo_lots(lots: Sequence[TaxLot], quantity: Decimal) -> Lots:
    """Lots to sell for ``quantity`` shares, highest cost first (ties: oldest, then lot id)."""
    plan: list[tuple[str, Decimal]] = []
    left = quantity
    for lot in sorted(lots, key=lambda lot: (-lot.cost_basis, lot.acquired, lot.lot_id)):
        if left <= 0:
            break
        take = min(left, lot.quantity)
        plan.append((lot.lot_id, take))
        left -= take
    return tuple(plan)


def lots_for_partial_fill(order_lots: Lots, already_settled: Decimal, quantity: Decimal) -> Lots:
    """Slice of an order's named lots for a fill of ``quantity`` after ``already_settled`` shares.

    An order's lots are consumed in the order listed, so a sell order filled in several parts
    reduces its first named lot first.
    """
    out: list[tuple[str, Decimal]] = []
    skip, left = already_settled, quantity
    for lot_id, q in order_lots:
        use_from = min(q, skip)
        skip -= use_from
        take = min(q - use_from, left)
        if take > 0:
            out.append((lot_id, take))
            left -= take
    if left > 0:
        raise InvalidInput(
            f"order lots cover {sum((q for _, q in order_lots), ZERO)} shares; fill needs "
            f"{already_settled + quantity}",
            ["fill.lots"],
        )
    return tuple(out)


def _check_fill(account: Account, fill: SettledFill) -> None:
    where = f"fills.{fill.fill_id}"
    if fill.account_id != account.id:
        raise InvalidInput(
            f"fill {fill.fill_id} is for account {fill.account_id}, not {account.id}",
            [f"{where}.account_id"],
        )
    if fill.quantity <= 0:
        raise InvalidInput(f"fill quantity {fill.quantity} must be > 0", [f"{where}.quantity"])
    if fill.price <= 0:
        raise InvalidInput(f"fill price {fill.price} must be > 0", [f"{where}.price"])
    if fill.fee_per_share < 0:
        raise InvalidInput("fee_per_share must be >= 0", [f"{where}.fee_per_share"])


def _sell_plan(account: Account, fill: SettledFill) -> Lots:
    where = f"fills.{fill.fill_id}"
    held = account.lots_of(fill.instrument)
    total = sum((lot.quantity for lot in held), ZERO)
    if total < fill.quantity:
        raise Conflict(
            f"account {account.id} holds {total} {fill.instrument}; cannot settle a sale of "
            f"{fill.quantity}",
            [f"{where}.quantity"],
        )
    if not fill.lots:
        return hifo_lots(held, fill.quantity)
    by_id = {lot.lot_id: lot for lot in held}
    named: dict[str, Decimal] = {}
    for i, (lot_id, q) in enumerate(fill.lots):
        if lot_id not in by_id:
            raise Conflict(
                f"lot {lot_id} of {fill.instrument} is not held by account {account.id}",
                [f"{where}.lots[{i}]"],
            )
        named[lot_id] = named.get(lot_id, ZERO) + q
        if q <= 0 or named[lot_id] > by_id[lot_id].quantity:
            raise Conflict(
                f"lot {lot_id} holds {by_id[lot_id].quantity}; cannot sell {named[lot_id]}",
                [f"{where}.lots[{i}]"],
            )
    if sum(named.values(), ZERO) != fill.quantity:
        raise InvalidInput(
            f"named lots sum to {sum(named.values(), ZERO)}, fill is {fill.quantity}",
            [f"{where}.lots"],
        )
    return fill.lots


def apply_settlement(
    account: Account, fill: SettledFill, *, long_term_days: int = LONG_TERM_DAYS
) -> SettlementResult:
    """Apply a settled fill to ``account`` in place (all or nothing) and report what changed.

    Raises
    ------
    InvalidInput
        Bad quantities or prices, another account's fill, named lots not summing to the fill.
    Conflict
        Selling more than held or a lot not held; a buy whose lot id already exists (the fill
        was settled already).
    """
    _check_fill(account, fill)
    if fill.side == Side.BUY:
        if any(lot.lot_id == fill.fill_id for lot in account.lots):
            raise Conflict(
                f"lot {fill.fill_id} exists: fill already settled", [f"fills.{fill.fill_id}"]
            )
        basis = fill.price + fill.fee_per_share
        lot = TaxLot(fill.fill_id, fill.instrument, fill.quantity, basis, fill.trade_date)
        account.lots.append(lot)
        delta = -fill.quantity * basis
        account.cash += delta
        return SettlementResult(fill.fill_id, delta, lot, ())
    plan = _sell_plan(account, fill)
    proceeds = fill.price - fill.fee_per_share
    by_id = {lot.lot_id: lot for lot in account.lots_of(fill.instrument)}
    realized = []
    for lot_id, q in plan:
        lot = by_id[lot_id]
        term = Term.LONG if lot.is_long_term(fill.trade_date, long_term_days) else Term.SHORT
        realized.append(
            RealizedGain(
                lot_id,
                fill.instrument,
                q,
                lot.cost_basis,
                proceeds,
                (proceeds - lot.cost_basis) * q,
                term,
                lot.acquired,
                fill.trade_date,
            )
        )
        lot.quantity -= q
    account.lots = [lot for lot in account.lots if lot.quantity > 0]
    delta = fill.quantity * proceeds
    account.cash += delta
    return SettlementResult(fill.fill_id, delta, None, tuple(realized))


def buying_power(
    settled_cash: Decimal, unsettled_buys: Sequence[SettledFill | tuple[Decimal, Decimal]]
) -> Decimal:
    """Cash a cash account may spend without relying on unsettled sale proceeds.

    Settled cash minus the cost of buys traded but not yet settled (each a fill or a
    ``(quantity, price_incl_fees)`` pair). Unsettled *sale* proceeds are deliberately not
    counted: spending them before they settle is a good-faith violation.
    """
    owed = ZERO
    for b in unsettled_buys:
        if isinstance(b, SettledFill):
            owed += b.quantity * (b.price + b.fee_per_share)
        else:
            owed += b[0] * b[1]
    return settled_cash - owed
