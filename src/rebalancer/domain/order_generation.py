"""Order generation: one order per instrument from an account's proposed trades, sells first
when cash is short, limit prices through the arrival price.

Quantities are :class:`~decimal.Decimal` shares; prices are :class:`~decimal.Decimal` account
currency per share; basis points (``_bps``) are 1/10,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.order_lifecycle import (
    CENT,
    ZERO,
    Lots,
    Order,
    Side,
    TimeInForce,
    order_id_for,
)


@dataclass(frozen=True, slots=True)
class Trade:
    """A trade proposed by the optimizer for one account: shares, side and lots to sell."""

    instrument: str
    side: Side
    quantity: Decimal
    lots: Lots = ()
    price: Decimal | None = None
    """Arrival (reference) price per share, used for limit prices and the cash check."""


def limit_price_for(side: Side, arrival: Decimal, offset_bps: Decimal) -> Decimal:
    """Limit ``offset_bps`` through the arrival price (above for buys), rounded to the cent."""
    sign = 1 if side == Side.BUY else -1
    price = arrival * (1 + sign * offset_bps / Decimal(10_000))
    return price.quantize(CENT, rounding=ROUND_HALF_UP)


def generate_orders(
    recommendation_id: str,
    account_id: str,
    trades: Sequence[Trade],
    *,
    cash: Decimal | None = None,
    limit_offset_bps: Decimal | None = None,
    tif: TimeInForce = TimeInForce.DAY,
) -> list[Order]:
    """One order per instrument from an account's trades; sells first when cash is short.

    Trades of the same instrument and side are merged (lots concatenated). When ``cash`` is
    given and the buys' notional (``quantity * price``) exceeds it, buys get ``wave=1``: they
    are to be sent only after the sells (``wave=0``) have filled. With ``limit_offset_bps``,
    priced trades become limit orders (see :func:`limit_price_for`); otherwise market orders.
    Orders are returned sells first, then by instrument.

    Raises
    ------
    InvalidInput
        Non-positive quantity, named lots not summing to the quantity, or both a buy and a sell
        of one instrument (``fields`` like ``trades[2].quantity``).
    """
    merged: dict[str, Trade] = {}
    for i, t in enumerate(trades):
        if t.quantity <= 0:
            raise InvalidInput(
                f"trade quantity {t.quantity} must be > 0", [f"trades[{i}].quantity"]
            )
        if t.lots and sum((q for _, q in t.lots), ZERO) != t.quantity:
            raise InvalidInput(
                f"lots of {t.instrument} sum to {sum(q for _, q in t.lots)}, not {t.quantity}",
                [f"trades[{i}].lots"],
            )
        if t.lots and t.side == Side.BUY:
            raise InvalidInput("a buy cannot name lots to sell", [f"trades[{i}].lots"])
        prev = merged.get(t.instrument)
        if prev is not None and prev.side != t.side:
            raise InvalidInput(
                f"both a buy and a sell of {t.instrument}; net them first", [f"trades[{i}].side"]
            )
        if prev is not None:
            t = replace(
                t,
                quantity=prev.quantity + t.quantity,
                lots=prev.lots + t.lots,
                price=prev.price or t.price,
            )
        merged[t.instrument] = t
    buy_cost = sum(
        (t.quantity * t.price for t in merged.values() if t.side == Side.BUY and t.price),
        ZERO,
    )
    cash_short = cash is not None and buy_cost > cash
    orders = []
    for t in sorted(merged.values(), key=lambda t: (t.side != Side.SELL, t.instrument)):
        limit = None
        if limit_offset_bps is not None and t.price is not None:
            limit = limit_price_for(t.side, t.price, limit_offset_bps)
        orders.append(
            Order(
                order_id=order_id_for(recommendation_id, account_id, t.instrument),
                recommendation_id=recommendation_id,
                account_id=account_id,
                instrument=t.instrument,
                side=t.side,
                quantity=t.quantity,
                lots=t.lots,
                limit_price=limit,
                arrival_price=t.price,
                tif=tif,
                wave=1 if cash_short and t.side == Side.BUY else 0,
            )
        )
    return orders
