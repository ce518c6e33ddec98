"""Rebalance status derived from orders, with validated transitions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.errors import IllegalTransition
from rebalancer.domain.orders import Order, OrderStatus, Side
from rebalancer.domain.rebalance import (
    OPEN_STATUSES,
    REBALANCE_TERMINAL,
    REBALANCE_TRANSITIONS,
    RebalanceStatus,
    advance,
    approve,
    check_transition,
    reject,
    status_from_orders,
)

R = RebalanceStatus
S = OrderStatus


def order(status: OrderStatus, filled: int = 0, qty: int = 10) -> Order:
    return Order(
        f"o{id(status)}", "r", "a", "X", Side.BUY, Decimal(qty), Decimal(filled), status=status
    )


def test_status_from_orders() -> None:
    assert status_from_orders([]) == R.NO_TRADE
    assert status_from_orders([order(S.FILLED, 10), order(S.SENT)]) == R.TRADING
    assert status_from_orders([order(S.FILLED, 10), order(S.FILLED, 10)]) == R.COMPLETE
    assert status_from_orders([order(S.REJECTED), order(S.EXPIRED)]) == R.FAILED
    assert status_from_orders([order(S.FILLED, 10), order(S.REJECTED)]) == R.PARTIALLY_COMPLETE
    assert status_from_orders([order(S.CANCELLED, 4)]) == R.PARTIALLY_COMPLETE


def test_lifecycle() -> None:
    s = approve(R.PENDING_APPROVAL)
    assert s == R.APPROVED
    assert advance(s, []) == R.APPROVED
    s = advance(s, [order(S.SENT)])
    assert s == R.TRADING
    s = advance(s, [order(S.FILLED, 10), order(S.PARTIALLY_FILLED, 3)])
    assert s == R.TRADING
    s = advance(s, [order(S.FILLED, 10), order(S.CANCELLED, 3)])
    assert s == R.PARTIALLY_COMPLETE
    # finished rebalances keep their status
    assert advance(s, [order(S.FILLED, 10), order(S.CANCELLED, 10)]) == R.PARTIALLY_COMPLETE


def test_illegal_transitions() -> None:
    with pytest.raises(IllegalTransition) as e:
        approve(R.TRADING)
    assert e.value.fields == ["rebalance.status"]
    with pytest.raises(IllegalTransition):
        check_transition(R.COMPLETE, R.TRADING)
    with pytest.raises(IllegalTransition):
        check_transition(R.PENDING_APPROVAL, R.TRADING)
    with pytest.raises(IllegalTransition):
        advance(R.PENDING_APPROVAL, [order(S.SENT)])
    assert check_transition(R.APPROVED, R.NO_TRADE) == R.NO_TRADE


def test_only_a_pending_rebalance_can_be_rejected() -> None:
    assert reject(R.PENDING_APPROVAL) == R.REJECTED
    assert reject(R.REJECTED) == R.REJECTED  # again: a no-op
    assert check_transition(R.PENDING_APPROVAL, R.REJECTED) == R.REJECTED
    for current in set(R) - {R.PENDING_APPROVAL, R.REJECTED}:
        with pytest.raises(IllegalTransition) as e:
            reject(current)
        assert e.value.fields == ["rebalance.status"] and str(current) in str(e.value)
    assert R.REJECTED.terminal and advance(R.REJECTED, [order(S.SENT)]) == R.REJECTED


def test_open_statuses_are_exactly_the_unfinished_ones() -> None:
    """A rebalance is open (joined by triggers, skipped by batches) until it is finished."""
    assert set(OPEN_STATUSES) == {"requested"} | {str(s) for s in set(R) - REBALANCE_TERMINAL}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list(OrderStatus)), min_size=1, max_size=4), max_size=6))
def test_advance_only_makes_legal_moves(snapshots: list[list[OrderStatus]]) -> None:
    status = approve(R.PENDING_APPROVAL)
    for statuses in snapshots:
        orders = [order(s, 10 if s == S.FILLED else 0) for s in statuses]
        new = advance(status, orders)
        assert new == status or new in REBALANCE_TRANSITIONS[status]
        status = new
