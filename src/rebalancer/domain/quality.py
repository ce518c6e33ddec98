"""Execution quality: implementation shortfall, slippage against the optimizer's estimate,
fill rate and the share of rebalances completed, by instrument, by day and in total.

Definitions (``sign`` is +1 for buys, -1 for sells; ``w = filled * arrival`` is the order's
arrival notional in currency):

- implementation shortfall of an order (bps) = ``sign * (avg_fill - arrival) / arrival * 1e4``;
  of a group, the ``w``-weighted mean, i.e. ``sum(sign * (avg_fill - arrival) * filled) /
  sum(arrival * filled) * 1e4``; its currency amount is ``sum(sign * (avg_fill - arrival) *
  filled)`` (positive = cost);
- estimated cost (bps) = the ``w``-weighted mean of the optimizer's per-trade ``cost_bps``;
- slippage (bps) = shortfall - estimated cost, over the orders that have both;
- fill rate = ``sum(filled) / sum(requested)`` over *finished* orders (requested = the
  recommended quantity, before any good-faith resizing);
- completion rate = complete / (complete + partially complete + failed) finished rebalances
  that traded; the target is :data:`COMPLETION_TARGET`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from rebalancer.domain.orders import Side

COMPLETION_TARGET = 0.95
"""Share of rebalances that should complete fully."""


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What one order did (the input of the report)."""

    order_id: str
    instrument: str
    day: date
    side: Side
    requested: Decimal
    filled: Decimal
    avg_fill_price: Decimal | None
    arrival_price: Decimal | None
    estimated_cost_bps: float | None
    finished: bool


@dataclass(frozen=True, slots=True)
class QualityStats:
    """Execution quality of a group of orders (one instrument, one day, or all)."""

    key: str
    orders: int
    filled_orders: int
    requested_quantity: Decimal
    filled_quantity: Decimal
    fill_rate: float | None
    shortfall_bps: float | None
    shortfall_currency: Decimal
    estimated_cost_bps: float | None
    slippage_bps: float | None


@dataclass(frozen=True, slots=True)
class CompletionStats:
    """How finished rebalances ended (one day or all)."""

    key: str
    complete: int
    partially_complete: int
    failed: int

    @property
    def finished(self) -> int:
        """Rebalances that traded and ended."""
        return self.complete + self.partially_complete + self.failed

    @property
    def completion_rate(self) -> float | None:
        """``complete / finished`` (``None`` when nothing finished)."""
        return self.complete / self.finished if self.finished else None

    @property
    def meets_target(self) -> bool | None:
        """Whether :attr:`completion_rate` exceeds :data:`COMPLETION_TARGET`."""
        rate = self.completion_rate
        return None if rate is None else rate > COMPLETION_TARGET


def _mean(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total > 0 else None


def order_shortfall_bps(o: OrderOutcome) -> float | None:
    """Shortfall of one order in bps (``None`` without fills or arrival price)."""
    if o.filled <= 0 or o.avg_fill_price is None or not o.arrival_price:
        return None
    sign = 1 if o.side == Side.BUY else -1
    return float(sign * (o.avg_fill_price - o.arrival_price) / o.arrival_price * 10_000)


def stats(key: str, orders: Sequence[OrderOutcome]) -> QualityStats:
    """Execution quality of ``orders`` (see the module docstring for the formulas)."""
    finished = [o for o in orders if o.finished]
    requested = sum((o.requested for o in finished), Decimal(0))
    filled_fin = sum((o.filled for o in finished), Decimal(0))
    is_pairs: list[tuple[float, float]] = []
    est_pairs: list[tuple[float, float]] = []
    slip_pairs: list[tuple[float, float]] = []
    cost = Decimal(0)
    for o in orders:
        bps = order_shortfall_bps(o)
        if bps is None:
            continue
        assert o.arrival_price is not None and o.avg_fill_price is not None
        w = float(o.filled * o.arrival_price)
        sign = 1 if o.side == Side.BUY else -1
        cost += sign * (o.avg_fill_price - o.arrival_price) * o.filled
        is_pairs.append((bps, w))
        if o.estimated_cost_bps is not None:
            est_pairs.append((o.estimated_cost_bps, w))
            slip_pairs.append((bps - o.estimated_cost_bps, w))
    return QualityStats(
        key=key,
        orders=len(orders),
        filled_orders=len(is_pairs),
        requested_quantity=requested,
        filled_quantity=sum((o.filled for o in orders), Decimal(0)),
        fill_rate=float(filled_fin / requested) if requested > 0 else None,
        shortfall_bps=_mean(is_pairs),
        shortfall_currency=cost,
        estimated_cost_bps=_mean(est_pairs),
        slippage_bps=_mean(slip_pairs),
    )


def grouped(
    orders: Iterable[OrderOutcome], key: Callable[[OrderOutcome], str]
) -> list[QualityStats]:
    """:func:`stats` per group, groups sorted by key."""
    groups: dict[str, list[OrderOutcome]] = {}
    for o in orders:
        groups.setdefault(key(o), []).append(o)
    return [stats(k, groups[k]) for k in sorted(groups)]


def completion(key: str, statuses: Iterable[str]) -> CompletionStats:
    """Count finished rebalance statuses (others, e.g. ``trading`` or ``no_trade``, ignored)."""
    s = list(statuses)
    return CompletionStats(
        key, s.count("complete"), s.count("partially_complete"), s.count("failed")
    )
