"""Rebalance status: a small state machine whose trading states derive from its orders.

::

    pending_approval --approve--> approved --orders--> trading --orders done--> complete
          |                          |                    |                  partially_complete
          +--> no_trade / failed     +--> no_trade        +--------------->  failed

While trading, the status is derived from the orders (:func:`status_from_orders`): any order
still working means ``trading``; once all are terminal, ``complete`` if every order filled,
``failed`` if no shares traded at all, else ``partially_complete`` (the remainder is then
re-optimized from the new state as a new rebalance, never re-sent blindly).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from rebalancer.domain.errors import IllegalTransition
from rebalancer.domain.orders import Order, OrderStatus


class RebalanceStatus(enum.StrEnum):
    """Lifecycle status of one rebalance (one approved recommendation and its orders)."""

    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    TRADING = "trading"
    PARTIALLY_COMPLETE = "partially_complete"
    COMPLETE = "complete"
    FAILED = "failed"
    NO_TRADE = "no_trade"

    @property
    def terminal(self) -> bool:
        """Whether the rebalance is finished."""
        return self in REBALANCE_TERMINAL


REBALANCE_TERMINAL = frozenset(
    {
        RebalanceStatus.PARTIALLY_COMPLETE,
        RebalanceStatus.COMPLETE,
        RebalanceStatus.FAILED,
        RebalanceStatus.NO_TRADE,
    }
)
_R = RebalanceStatus
REBALANCE_TRANSITIONS: Mapping[RebalanceStatus, frozenset[RebalanceStatus]] = {
    _R.PENDING_APPROVAL: frozenset({_R.APPROVED, _R.NO_TRADE, _R.FAILED}),
    # An approved rebalance whose orders all complete before we look goes straight to the end.
    _R.APPROVED: frozenset(
        {_R.TRADING, _R.NO_TRADE, _R.FAILED, _R.COMPLETE, _R.PARTIALLY_COMPLETE}
    ),
    _R.TRADING: frozenset({_R.PARTIALLY_COMPLETE, _R.COMPLETE, _R.FAILED}),
    _R.PARTIALLY_COMPLETE: frozenset(),
    _R.COMPLETE: frozenset(),
    _R.FAILED: frozenset(),
    _R.NO_TRADE: frozenset(),
}
"""Legal ``from -> {to}`` changes; staying in the same status is always allowed."""


def status_from_orders(orders: Sequence[Order]) -> RebalanceStatus:
    """Status implied by a rebalance's orders once it is trading.

    ``NO_TRADE`` without orders; ``TRADING`` while any order is not terminal; then ``COMPLETE``
    if all filled, ``FAILED`` if none has any filled shares, else ``PARTIALLY_COMPLETE``. Late
    fills after a cancel count as filled shares.
    """
    if not orders:
        return RebalanceStatus.NO_TRADE
    if any(not o.status.terminal for o in orders):
        return RebalanceStatus.TRADING
    if all(o.status == OrderStatus.FILLED for o in orders):
        return RebalanceStatus.COMPLETE
    if all(o.filled_quantity == 0 for o in orders):
        return RebalanceStatus.FAILED
    return RebalanceStatus.PARTIALLY_COMPLETE


def check_transition(current: RebalanceStatus, to: RebalanceStatus) -> RebalanceStatus:
    """Return ``to`` if ``current -> to`` is legal (or unchanged), else raise.

    Raises
    ------
    IllegalTransition
        With ``fields == ["rebalance.status"]``.
    """
    if to != current and to not in REBALANCE_TRANSITIONS[current]:
        raise IllegalTransition(f"rebalance cannot go from {current} to {to}", ["rebalance.status"])
    return to


def approve(current: RebalanceStatus) -> RebalanceStatus:
    """``pending_approval -> approved``; anything else is illegal."""
    if current != RebalanceStatus.PENDING_APPROVAL:
        raise IllegalTransition(
            f"only a rebalance pending approval can be approved; it is {current}",
            ["rebalance.status"],
        )
    return RebalanceStatus.APPROVED


def advance(current: RebalanceStatus, orders: Sequence[Order]) -> RebalanceStatus:
    """New status of an approved or trading rebalance after its orders changed.

    An approved rebalance without orders stays approved (orders not generated yet). A finished
    rebalance keeps its status (a late fill is reconciled into lots, not into the status).
    A rebalance pending approval cannot have orders.

    Raises
    ------
    IllegalTransition
        When the derived status is not reachable from ``current``.
    """
    if (current == RebalanceStatus.APPROVED and not orders) or current.terminal:
        return current
    if current == RebalanceStatus.PENDING_APPROVAL:
        if orders:
            raise IllegalTransition(
                "a rebalance pending approval cannot have orders", ["rebalance.status"]
            )
        return current
    return check_transition(current, status_from_orders(orders))
