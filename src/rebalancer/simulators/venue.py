"""A simulated execution venue: acks, fills with slippage, partial fills, rejects, cancels.

Pure logic: :class:`SimulatedVenue` turns an :class:`~rebalancer.contracts.OrderPlacedV1` and
a market price into the :class:`~rebalancer.contracts.ExecutionReportV1` stream a real venue
would send. Every order draws from its own generator seeded by ``(seed, order_id)``, so the
outcome of an order does not depend on the order in which orders arrive.

Report stream of one order (``sequence`` from 1, ``report_id = f"{order_id}:{sequence}"``):

- ``rejected`` (sequence 1, with a reason), or
- ``ack``, then zero or more ``partial_fill`` and a final ``fill``; or, for a limit order not
  marketable or a stalled partial, the order rests until :meth:`SimulatedVenue.on_market`
  fills it, :meth:`SimulatedVenue.handle_cancel` cancels it or
  :meth:`SimulatedVenue.end_of_day` expires it (``day`` orders); ``ioc`` orders cancel their
  unfilled remainder at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from rebalancer.contracts import (
    ExecutionReportV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    OrderType,
    ReportKind,
    Side,
    TimeInForce,
)

PRICE_QUANTUM = Decimal("0.0001")
"""Fill prices are rounded to this many currency units per share."""

DEFAULT_CLOCK_START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
"""Start of the venue's synthetic clock when no clock is given (one second per report)."""

RANDOM_REJECT_REASONS = (
    "insufficient liquidity (simulated)",
    "price band (simulated)",
    "risk limit (simulated)",
)


@dataclass
class _Order:
    order: OrderPlacedV1
    rng: np.random.Generator
    filled: Decimal = Decimal(0)
    sequence: int = 0
    final: bool = False
    reports: list[ExecutionReportV1] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.order.quantity - self.filled


class SimulatedVenue:
    """An execution venue simulator.

    Parameters
    ----------
    seed
        Seed of all random draws.
    reject_probability
        Chance that an otherwise acceptable order is rejected (reason from
        :data:`RANDOM_REJECT_REASONS`).
    partial_fill_probability
        Chance that a marketable order fills in 2 to ``max_partial_fills`` pieces (only for
        whole-share quantities of at least 2).
    slippage_bps
        Mean adverse slippage in basis points of the market price: each fill draws uniformly
        in [0.5, 1.5] times it; buys pay more, sells receive less; limit orders never fill
        beyond their limit.
    max_partial_fills
        Most pieces a partially filled order is split into.
    stall_probability
        Chance that, after partial fills, the remainder rests (``ioc``: is cancelled) instead
        of filling, so that cancels and expiries can be tested.
    price_band_fraction
        Limit orders whose limit is further than this fraction from the market price are
        rejected with reason ``"price band: ..."``.
    max_adv_fraction
        Orders for more than this fraction of ``adv_shares`` (when given) are rejected with
        reason ``"insufficient liquidity: ..."``.
    duplicate_probability
        Chance that each emitted report is emitted a second time (same ``report_id``).
    reorder_probability
        Chance that a returned batch has two neighbouring reports swapped.
    clock
        Returns the venue time of each report; default a synthetic clock starting at
        :data:`DEFAULT_CLOCK_START` and advancing one second per report.
    """

    def __init__(
        self,
        seed: int = 0,
        reject_probability: float = 0.0,
        partial_fill_probability: float = 0.0,
        slippage_bps: float = 5.0,
        *,
        max_partial_fills: int = 3,
        stall_probability: float = 0.0,
        price_band_fraction: float = 0.10,
        max_adv_fraction: float = 0.25,
        duplicate_probability: float = 0.0,
        reorder_probability: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, p in [
            ("reject_probability", reject_probability),
            ("partial_fill_probability", partial_fill_probability),
            ("stall_probability", stall_probability),
            ("duplicate_probability", duplicate_probability),
            ("reorder_probability", reorder_probability),
        ]:
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if slippage_bps < 0:
            raise ValueError(f"slippage_bps must be >= 0, got {slippage_bps}")
        if max_partial_fills < 2:
            raise ValueError(f"max_partial_fills must be >= 2, got {max_partial_fills}")
        self.seed = seed
        self.reject_probability = reject_probability
        self.partial_fill_probability = partial_fill_probability
        self.slippage_bps = slippage_bps
        self.max_partial_fills = max_partial_fills
        self.stall_probability = stall_probability
        self.price_band_fraction = price_band_fraction
        self.max_adv_fraction = max_adv_fraction
        self.duplicate_probability = duplicate_probability
        self.reorder_probability = reorder_probability
        self._clock = clock
        self._time = DEFAULT_CLOCK_START
        self._orders: dict[str, _Order] = {}
        self._noise = np.random.default_rng([seed, 0x5EED])

    # ------------------------------------------------------------------ public API
    def handle_order(
        self,
        order: OrderPlacedV1,
        market_price: Decimal | float,
        *,
        adv_shares: float | None = None,
    ) -> list[ExecutionReportV1]:
        """Accept an order at ``market_price`` (currency per share) and report on it.

        A redelivered order (same ``order_id``) gets the reports already sent, not new ones.
        ``adv_shares`` (average daily volume in shares), when given, enables the liquidity
        check.
        """
        price = Decimal(str(market_price))
        if not price > 0:
            raise ValueError(f"market_price must be > 0, got {market_price}")
        known = self._orders.get(order.order_id)
        if known is not None:
            return list(known.reports)
        rng = np.random.default_rng([self.seed, zlib.crc32(order.order_id.encode())])
        st = self._orders[order.order_id] = _Order(order, rng)
        reason = self._reject_reason(st, price, adv_shares)
        if reason is not None:
            out = [self._report(st, ReportKind.REJECTED, reason=reason)]
        else:
            out = [self._report(st, ReportKind.ACK)]
            out += self._try_fill(st, price, allow_partial=True)
        return self._disturb(out)

    def handle_cancel(self, cancel: OrderCancelRequestedV1) -> list[ExecutionReportV1]:
        """Cancel the unfilled remainder of an open order.

        Returns a ``cancelled`` report, or nothing if the order is unknown or already final.
        """
        st = self._orders.get(cancel.order_id)
        if st is None or st.final:
            return []
        report = self._report(st, ReportKind.CANCELLED, reason=f"cancel requested: {cancel.reason}")
        return self._disturb([report])

    def on_market(self, prices: Mapping[str, Decimal | float]) -> list[ExecutionReportV1]:
        """Offer new market prices (currency per share) to resting orders; returns their fills."""
        out: list[ExecutionReportV1] = []
        for st in self._open():
            if st.order.instrument in prices:
                out += self._try_fill(st, Decimal(str(prices[st.order.instrument])), False)
        return self._disturb(out)

    def end_of_day(self) -> list[ExecutionReportV1]:
        """Expire the remainder of every resting ``day`` order."""
        out = [
            self._report(st, ReportKind.EXPIRED, reason="day order expired at the close")
            for st in self._open()
            if st.order.time_in_force is TimeInForce.DAY
        ]
        return self._disturb(out)

    def open_orders(self) -> list[str]:
        """Ids of the orders that are still working (sorted)."""
        return sorted(st.order.order_id for st in self._open())

    def filled_quantity(self, order_id: str) -> Decimal:
        """Shares filled so far on ``order_id``."""
        return self._orders[order_id].filled

    # ------------------------------------------------------------------ internals
    def _open(self) -> list[_Order]:
        return [st for _, st in sorted(self._orders.items()) if not st.final]

    def _reject_reason(self, st: _Order, price: Decimal, adv: float | None) -> str | None:
        order = st.order
        if order.limit_price is not None:
            gap = abs(order.limit_price - price) / price
            if gap > Decimal(str(self.price_band_fraction)):
                return (
                    f"price band: limit {order.limit_price} is {float(gap):.1%} from the "
                    f"market price {price} (band {self.price_band_fraction:.0%})"
                )
        if adv is not None and float(order.quantity) > self.max_adv_fraction * adv:
            return (
                f"insufficient liquidity: {order.quantity} shares is more than "
                f"{self.max_adv_fraction:.0%} of the average daily volume of {adv:,.0f} shares"
            )
        if st.rng.random() < self.reject_probability:
            return str(RANDOM_REJECT_REASONS[int(st.rng.integers(len(RANDOM_REJECT_REASONS)))])
        return None

    def _marketable(self, order: OrderPlacedV1, price: Decimal) -> bool:
        if order.order_type is OrderType.MARKET or order.limit_price is None:
            return True
        if order.side is Side.BUY:
            return price <= order.limit_price
        return price >= order.limit_price

    def _fill_price(self, st: _Order, price: Decimal) -> Decimal:
        bps = Decimal(repr(self.slippage_bps * (0.5 + float(st.rng.random()))))
        sign = 1 if st.order.side is Side.BUY else -1
        fill = (price * (1 + sign * bps / 10_000)).quantize(PRICE_QUANTUM)
        limit = st.order.limit_price
        if limit is not None:
            fill = min(fill, limit) if st.order.side is Side.BUY else max(fill, limit)
        return fill

    def _pieces(self, st: _Order, allow_partial: bool) -> list[Decimal]:
        qty = st.remaining
        whole = qty == qty.to_integral_value() and qty >= 2
        if not (allow_partial and whole and st.rng.random() < self.partial_fill_probability):
            return [qty]
        n = int(qty)
        k = int(st.rng.integers(2, min(self.max_partial_fills, n) + 1))
        cuts = sorted(int(c) for c in st.rng.choice(np.arange(1, n), size=k - 1, replace=False))
        bounds = [0, *cuts, n]
        return [Decimal(bounds[i + 1] - bounds[i]) for i in range(k)]

    def _try_fill(self, st: _Order, price: Decimal, allow_partial: bool) -> list[ExecutionReportV1]:
        order = st.order
        out: list[ExecutionReportV1] = []
        if not self._marketable(order, price):
            if order.time_in_force is TimeInForce.IOC:
                reason = f"ioc: limit {order.limit_price} not marketable at {price}"
                out.append(self._report(st, ReportKind.CANCELLED, reason=reason))
            return out
        pieces = self._pieces(st, allow_partial)
        stall = len(pieces) > 1 and st.rng.random() < self.stall_probability
        if stall:
            pieces = pieces[:-1]
        for i, qty in enumerate(pieces):
            last = i == len(pieces) - 1 and not stall
            kind = ReportKind.FILL if last else ReportKind.PARTIAL_FILL
            out.append(self._report(st, kind, qty, self._fill_price(st, price)))
        if stall and order.time_in_force is TimeInForce.IOC:
            reason = "ioc: remainder cancelled, no more liquidity"
            out.append(self._report(st, ReportKind.CANCELLED, reason=reason))
        return out

    def _now(self) -> datetime:
        if self._clock is not None:
            return self._clock()
        self._time += timedelta(seconds=1)
        return self._time

    def _report(
        self,
        st: _Order,
        kind: ReportKind,
        quantity: Decimal = Decimal(0),
        price: Decimal | None = None,
        reason: str | None = None,
    ) -> ExecutionReportV1:
        st.sequence += 1
        st.filled += quantity
        st.final = st.final or kind.is_final
        order = st.order
        report = ExecutionReportV1(
            report_id=f"{order.order_id}:{st.sequence}",
            order_id=order.order_id,
            account_id=order.account_id,
            instrument=order.instrument,
            side=order.side,
            kind=kind,
            fill_quantity=quantity,
            fill_price=price,
            cumulative_quantity=st.filled,
            sequence=st.sequence,
            reason=reason,
            venue_time=self._now(),
        )
        st.reports.append(report)
        return report

    def _disturb(self, reports: list[ExecutionReportV1]) -> list[ExecutionReportV1]:
        """Apply the duplicate and reorder options to a batch about to be returned."""
        out = list(reports)
        if self.duplicate_probability > 0:
            dups = [r for r in reports if self._noise.random() < self.duplicate_probability]
            out += dups
        reorder = len(out) >= 2 and self.reorder_probability > 0
        if reorder and self._noise.random() < self.reorder_probability:
            i = int(self._noise.integers(len(out) - 1))
            out[i], out[i + 1] = out[i + 1], out[i]
        return out
