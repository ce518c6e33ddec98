"""Service-level properties through the simulated venue: partial fills, rejects, stalls and
expiries, duplicate and reordered reports; then settlement.

Invariants checked for every venue seed:
- every rebalance ends (complete, partially complete or failed);
- positions and cash after settlement == initial + all settled fills;
- each venue report was applied at most once (an order's filled shares equal the sum of its
  recorded fills, and no order has two execution rows with one venue sequence);
- filled never above ordered; our filled == the venue's filled for every order.
"""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tradehelpers import (
    InProcessMarket,
    make_book,
    make_recommendation,
    positions,
    rows,
    settled_deltas,
)

from rebalancer.adapters import orm
from rebalancer.contracts import OrderPlacedV1, parse_payload_as
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

TERMINAL = {"complete", "partially_complete", "failed"}


def _check_invariants(engine: Any, book: Any, initial: dict[str, Any], venue: Any) -> None:
    orders = rows(engine, orm.orders, account_id=book.accounts)
    assert orders
    ex = rows(engine, orm.executions, order_id=[o.id for o in orders])
    for o in orders:
        assert o.status in {"filled", "cancelled", "rejected", "expired"}, o
        assert Decimal(0) <= o.filled_quantity <= o.quantity
        fills = [
            e
            for e in ex
            if e.order_id == o.id
            and e.kind in ("fill", "partial_fill")
            and e.outcome in ("applied", "ignored_late")
        ]
        assert sum((e.fill_quantity for e in fills), Decimal(0)) == o.filled_quantity
        seqs = Counter(e.sequence for e in ex if e.order_id == o.id and e.outcome != "duplicate")
        assert max(seqs.values()) == 1, seqs
        assert venue.filled_quantity(str(o.id)) == o.filled_quantity
    for acct in book.accounts:
        shares, cash = positions(engine, book.tenant, acct)
        delta, cash_delta, stl = settled_deltas(engine, acct)
        start_shares, start_cash = initial[acct]
        want = {
            i: start_shares.get(i, Decimal(0)) + delta.get(i, Decimal(0))
            for i in {*start_shares, *delta}
        }
        assert shares == {i: q for i, q in want.items() if q != 0}
        assert cash == start_cash + cash_delta
        fill_ids = {
            e.report_id
            for e in ex
            if e.kind in ("fill", "partial_fill")
            and e.outcome in ("applied", "ignored_late")
            and e.order_id in {o.id for o in orders if o.account_id == acct}
        }
        assert {s.report_id for s in stl} == fill_ids  # every fill settled exactly once
    rebs = rows(engine, orm.rebalances, account_id=book.accounts)
    assert {r.status for r in rebs} <= TERMINAL, [r.status for r in rebs]


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 10_000))
def test_orders_through_a_disorderly_venue_settle_into_positions(engine: Any, seed: int) -> None:
    book = make_book(engine, n_accounts=3, cash="500")
    initial = {a: positions(engine, book.tenant, a) for a in book.accounts}
    venue = SimulatedVenue(
        seed=seed,
        reject_probability=0.15,
        partial_fill_probability=0.6,
        stall_probability=0.3,
        duplicate_probability=0.3,
        reorder_probability=0.6,
    )
    market = InProcessMarket(engine, book, venue, SettlementAgent(seed=seed))
    for acct in book.accounts:  # sells 4,000 + 1,000; buys 4,000 > 500 cash: a buy wave
        rec = make_recommendation(
            engine, book, acct, [(book.a, "sell", 40), (book.b, "sell", 20), (book.c, "buy", 200)]
        )
        with UnitOfWork(engine, book.tenant) as uow:
            orders = trading.approve(uow, rec, "tester")
        assert {o["wave"] for o in orders if o["side"] == "buy"} == {1}
    market.pump()
    assert any(kind == "duplicate" for _, kind in market.outcomes) or venue.duplicate_probability
    _check_invariants(engine, book, initial, venue)


def test_reports_out_of_order_late_and_unknown_are_recorded(engine: Any) -> None:
    """A fill before its ack, a duplicate, a fill after the cancel, a report for an unknown
    order: each recorded once with its outcome; the late fill still settles."""
    book = make_book(engine, n_accounts=1, cash="10000")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.c, "buy", 10)])
    venue = SimulatedVenue(seed=1, partial_fill_probability=1.0, stall_probability=1.0)
    market = InProcessMarket(engine, book, venue)
    with UnitOfWork(engine, book.tenant) as uow:
        (order,) = trading.approve(uow, rec, "tester")
    placed = market._events()
    reports = venue.handle_order(parse_payload_as(placed[0], OrderPlacedV1), Decimal(20))
    ack, *fills = reports  # the remainder rests (stall)
    market.apply([fills[0], ack, fills[0]])  # fill before ack, then a duplicate
    with UnitOfWork(engine, book.tenant) as uow:
        trading.cancel_order(uow, uuid.UUID(order["id"]), "tester", "enough")
    market.pump(end_of_day=False)  # the venue's cancelled report comes back
    done = sum((f.fill_quantity for f in fills), Decimal(0))  # < 10: the rest stalled
    extra = fills[0].model_copy(
        update={
            "report_id": f"{order['id']}:99",
            "sequence": 99,
            "fill_quantity": Decimal(1),
            "cumulative_quantity": done + 1,
        }
    )
    late = [*fills[1:], extra]  # fills produced before the cancel took effect, delivered late
    market.apply(late)
    unknown = ack.model_copy(update={"report_id": "nope-1", "order_id": "not-an-order"})
    market.apply([unknown])
    outcomes = dict(market.outcomes)
    assert outcomes[fills[0].report_id] == "duplicate"  # the second delivery
    assert outcomes[ack.report_id] == "ignored_late"  # behind the fill already applied
    assert all(outcomes[r.report_id] == "ignored_late" for r in late)
    assert outcomes["nope-1"] == "rejected_unknown"
    ex = {e.report_id: e for e in rows(engine, orm.executions, report_id=list(outcomes))}
    assert ex["nope-1"].order_id is None and ex["nope-1"].outcome == "rejected_unknown"
    assert {ex[r.report_id].outcome for r in late} == {"ignored_late"}
    (stored,) = rows(engine, orm.orders, account_id=acct)
    assert stored.status == "cancelled"
    assert stored.filled_quantity == done + 1
    shares, _ = positions(engine, book.tenant, acct)
    assert shares[book.c] == stored.filled_quantity  # late fills reconciled into lots
