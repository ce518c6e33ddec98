"""Execution rules: order style, block ids and fill increments, the good-faith buy sizing and
the realized-cost estimator fed back into the optimizer's cost model.

Units
-----
Shares and money are :class:`~decimal.Decimal` (shares, account currency); costs are ``float``
basis points (``_bps``, 1/10,000 of traded value).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.orders import ZERO, BlockChild, BlockOrder, Side, TimeInForce, allocate_fill

BLOCK_ACCOUNT_ID = "_block"
"""``account_id`` carried by a block order sent to the venue: it belongs to no single account
(its fills are allocated to the member accounts, and only the allocations settle)."""

_BLOCK_NAMESPACE = uuid.UUID("0b9d7c1e-52a4-4b53-9a0c-5c2f3e1d7a48")

GOOD_FAITH_MARKET_BUFFER_BPS = Decimal(50)
"""A market buy is priced at ``arrival * (1 + 50 bps)`` when checking buying power, so adverse
slippage cannot make it spend unsettled proceeds."""


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    """How orders of an approval are worked.

    Attributes
    ----------
    limit_offset_bps
        ``None``: market orders. Otherwise limit orders this many bps through the arrival price
        (above for buys, below for sells), see :func:`~rebalancer.domain.orders.limit_price_for`.
    time_in_force
        ``day`` (expire at the close), ``gtc`` or ``ioc``.
    """

    limit_offset_bps: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        if self.limit_offset_bps is not None and not (
            Decimal(0) <= self.limit_offset_bps <= Decimal(1000)
        ):
            raise InvalidInput(
                f"limit_offset_bps {self.limit_offset_bps} must be in [0, 1000]",
                ["execution.limit_offset_bps"],
            )


def block_id_for(child_order_ids: Sequence[str]) -> str:
    """Deterministic block id (UUID5) of a set of child orders (order of ids irrelevant)."""
    return str(uuid.uuid5(_BLOCK_NAMESPACE, "|".join(sorted(child_order_ids))))


def allocate_increment(
    block_id: str,
    instrument: str,
    side: Side,
    children: Sequence[BlockChild],
    allocated: Mapping[str, Decimal],
    increment: Decimal,
    lot_size: int = 1,
) -> dict[str, Decimal]:
    """Shares of a new block fill for each child, pro rata to what each child still needs.

    The rule of :func:`~rebalancer.domain.orders.allocate_fill` (round down to lots, remaining
    lots by largest remainder, then account id) applied to the children's *remaining*
    quantities (``quantity - allocated``). Allocating increment by increment keeps every
    earlier allocation fixed (cumulative largest-remainder allocation is not monotone), never
    gives a child more than its quantity, and sums exactly to ``increment``.

    Raises
    ------
    InvalidInput
        ``increment`` is negative or more than the children still need.
    """
    remaining = tuple(
        BlockChild(c.order_id, c.account_id, c.quantity - allocated.get(c.order_id, ZERO))
        for c in children
    )
    rest = BlockOrder(block_id, instrument, side, remaining)
    return {k: v for k, v in allocate_fill(rest, increment, lot_size).items() if v > 0}


@dataclass(frozen=True, slots=True)
class BuyToSize:
    """A buy waiting for buying power: shares, price per share for the check, round lot."""

    order_id: str
    quantity: Decimal
    price: Decimal
    lot_size: int = 1


def size_buys(buys: Sequence[BuyToSize], buying_power: Decimal) -> dict[str, Decimal]:
    """New quantities of ``buys`` so that their total cost stays within ``buying_power``.

    Good-faith rule: a cash account pays for buys with settled cash only (see
    :func:`~rebalancer.domain.settlement.buying_power`). When the buys cost more than the
    buying power, every buy is scaled by the same factor and rounded *down* to its lot size
    (so the total never exceeds the buying power); a buy scaled to zero gets ``0``.
    """
    cost = sum((b.quantity * b.price for b in buys), ZERO)
    if cost <= buying_power:
        return {b.order_id: b.quantity for b in buys}
    factor = max(buying_power, ZERO) / cost if cost > 0 else ZERO
    out = {}
    for b in buys:
        lot = Decimal(b.lot_size)
        out[b.order_id] = ((b.quantity * factor) / lot).to_integral_value(ROUND_FLOOR) * lot
    return out


# --------------------------------------------------------------------------- cost feedback
COST_SMOOTHING = 0.2
"""Weight of a new observation in the exponentially smoothed half-spread estimate."""

COST_OBSERVATION_CAP_BPS = 200.0
"""Observed costs are clipped to ``[0, 200]`` bps so one bad fill cannot wreck the estimate."""

COST_MIN_OBSERVATIONS = 3
"""The realized estimate replaces the quoted half spread once it rests on this many orders."""


def update_half_spread(
    prior_bps: float,
    observations: int,
    observed_bps: float,
    *,
    alpha: float = COST_SMOOTHING,
    cap_bps: float = COST_OBSERVATION_CAP_BPS,
) -> tuple[float, int]:
    """Exponential smoothing of the realized half-spread of one instrument.

    The observation is the order's implementation shortfall in bps (what the fills cost
    against the arrival price), clipped to ``[0, cap_bps]``. The first observation replaces
    the prior; later ones move it by ``alpha``::

        h_new = observed                          (observations == 0)
        h_new = (1 - alpha) * h_old + alpha * observed

    Returns
    -------
    tuple
        ``(new_half_spread_bps, observations + 1)``.
    """
    if not 0.0 < alpha <= 1.0:
        raise InvalidInput(f"alpha {alpha} must be in (0, 1]", ["alpha"])
    obs = min(max(observed_bps, 0.0), cap_bps)
    if observations <= 0:
        return obs, 1
    return (1.0 - alpha) * prior_bps + alpha * obs, observations + 1
