"""Rebalance status: a small state machine whose trading states derive from its orders.

::

    pending_approval --approve--> approved --orders--> trading --orders done--> complete
          |                          |                    |                  partially_complete
          +--> no_trade / failed     +--> no_trade        +--------------->  failed
          +--reject--> rejected (a person's "no", or superseded by a batch)
    requested --batch cancelled--> cancelled (never computed)

While trading, the status is derived from the orders (:func:`status_from_orders`): any order
still working means ``trading``; once all are terminal, ``complete`` if every order filled,
``failed`` if no shares traded at all, else ``partially_complete`` (the remainder is then
re-optimized from the new state as a new rebalance, never re-sent blindly).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

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
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    """Requested in a batch that was cancelled before a worker computed it."""

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
        RebalanceStatus.REJECTED,
        RebalanceStatus.CANCELLED,
    }
)
REQUESTED = "requested"
"""Status of a rebalance whose recommendation is not computed yet (before ``pending_approval``)."""

OPEN_STATUSES: tuple[str, ...] = (
    REQUESTED,
    RebalanceStatus.PENDING_APPROVAL.value,
    RebalanceStatus.APPROVED.value,
    RebalanceStatus.TRADING.value,
)
"""Statuses of a rebalance still in flight: an account has at most one such rebalance, a new
trigger joins it and a batch skips the account unless it is still ``requested``. A finished
one (:data:`REBALANCE_TERMINAL`, ``partially_complete`` included) is not open: the next
trigger or batch starts a new rebalance from the account's current state."""

_R = RebalanceStatus
REBALANCE_TRANSITIONS: Mapping[RebalanceStatus, frozenset[RebalanceStatus]] = {
    _R.PENDING_APPROVAL: frozenset({_R.APPROVED, _R.NO_TRADE, _R.FAILED, _R.REJECTED}),
    # An approved rebalance whose orders all complete before we look goes straight to the end.
    _R.APPROVED: frozenset(
        {_R.TRADING, _R.NO_TRADE, _R.FAILED, _R.COMPLETE, _R.PARTIALLY_COMPLETE}
    ),
    _R.TRADING: frozenset({_R.PARTIALLY_COMPLETE, _R.COMPLETE, _R.FAILED}),
    _R.PARTIALLY_COMPLETE: frozenset(),
    _R.COMPLETE: frozenset(),
    _R.FAILED: frozenset(),
    _R.NO_TRADE: frozenset(),
    _R.REJECTED: frozenset(),
    _R.CANCELLED: frozenset(),
}
"""Legal ``from -> {to}`` changes; staying in the same status is always allowed."""


@dataclass(frozen=True, slots=True)
class OrderTally:
    """Counts over one rebalance's orders: what its status and its buy wave depend on.

    Counted by the database for a stored rebalance (one aggregate row instead of every order,
    after each execution report and settlement) or by :meth:`of` from domain orders; both
    give the same numbers (tested).
    """

    orders: int = 0
    """All orders."""
    working: int = 0
    """Orders not yet in a terminal status."""
    filled: int = 0
    """Orders in status ``filled``."""
    with_fills: int = 0
    """Orders with filled shares (late fills after a cancel count)."""
    held_buys: int = 0
    """Second-wave orders still ``new``: buys held until the sells settle."""
    first_wave_working: int = 0
    """First-wave orders not yet terminal."""
    resized: int = 0
    """Orders the good-faith guard made smaller than recommended."""

    @staticmethod
    def of(orders: Sequence[Order], requested: Sequence[Decimal | None] = ()) -> OrderTally:
        """The tally of ``orders`` (``requested``: each order's recommended quantity before a
        resize, ``None`` when never resized; empty when unknown)."""
        working = [not o.status.terminal for o in orders]
        return OrderTally(
            orders=len(orders),
            working=sum(working),
            filled=sum(o.status == OrderStatus.FILLED for o in orders),
            with_fills=sum(o.filled_quantity > 0 for o in orders),
            held_buys=sum(o.wave == 1 and o.status == OrderStatus.NEW for o in orders),
            first_wave_working=sum(w and o.wave == 0 for o, w in zip(orders, working, strict=True)),
            resized=sum(
                r is not None and r > o.quantity for o, r in zip(orders, requested, strict=False)
            ),
        )

    @property
    def buys_may_go(self) -> bool:
        """Held buys wait and every first-wave order is done (their settlement aside)."""
        return self.held_buys > 0 and self.first_wave_working == 0


def status_from_tally(tally: OrderTally) -> RebalanceStatus:
    """Status implied by a rebalance's orders once it is trading (see
    :func:`status_from_orders`)."""
    if tally.orders == 0:
        return RebalanceStatus.NO_TRADE
    if tally.working:
        return RebalanceStatus.TRADING
    if tally.filled == tally.orders:
        return RebalanceStatus.COMPLETE
    if tally.with_fills == 0:
        return RebalanceStatus.FAILED
    return RebalanceStatus.PARTIALLY_COMPLETE


def status_from_orders(orders: Sequence[Order]) -> RebalanceStatus:
    """Status implied by a rebalance's orders once it is trading.

    ``NO_TRADE`` without orders; ``TRADING`` while any order is not terminal; then ``COMPLETE``
    if all filled, ``FAILED`` if none has any filled shares, else ``PARTIALLY_COMPLETE``. Late
    fills after a cancel count as filled shares.
    """
    return status_from_tally(OrderTally.of(orders))


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


def reject(current: RebalanceStatus) -> RebalanceStatus:
    """``pending_approval -> rejected`` (rejecting again is a no-op); anything else is illegal:
    an approved recommendation has orders, which are cancelled one by one instead."""
    if current not in (RebalanceStatus.PENDING_APPROVAL, RebalanceStatus.REJECTED):
        raise IllegalTransition(
            f"only a rebalance pending approval can be rejected; it is {current}",
            ["rebalance.status"],
        )
    return RebalanceStatus.REJECTED


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
