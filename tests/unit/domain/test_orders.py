"""Order state machine, execution reports, order generation and block allocation."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.errors import IllegalTransition, InvalidInput
from rebalancer.domain.orders import (
    TERMINAL,
    TRANSITIONS,
    BlockChild,
    BlockOrder,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderType,
    ReportKind,
    ReportOutcome,
    Side,
    Trade,
    allocate_fill,
    apply_report,
    build_blocks,
    child_fill_reports,
    generate_orders,
    limit_price_for,
    mark_sent,
    order_id_for,
    request_cancel,
    route_report,
)

D = Decimal
S = OrderStatus


def make_order(qty: str = "100") -> Order:
    return Order("o1", "r1", "a1", "AAPL", Side.BUY, D(qty))


def rep(
    rid: str, kind: ReportKind, qty: str = "0", price: str | None = None, **kw: object
) -> ExecutionReport:
    return ExecutionReport(
        rid,
        "o1",
        kind,
        D(qty),
        D(price) if price else None,
        **kw,  # type: ignore[arg-type]
    )


def test_happy_path_partial_then_fill() -> None:
    o = make_order()
    mark_sent(o)
    assert apply_report(o, rep("r1", ReportKind.ACK)) == ReportOutcome.APPLIED
    assert apply_report(o, rep("r2", ReportKind.PARTIAL_FILL, "40", "10")) == ReportOutcome.APPLIED
    assert o.status == S.PARTIALLY_FILLED
    assert apply_report(o, rep("r3", ReportKind.FILL, "60", "11")) == ReportOutcome.APPLIED
    assert o.status == S.FILLED
    assert o.filled_quantity == D(100)
    assert o.avg_fill_price == D("10.6")  # (40*10 + 60*11) / 100


def test_duplicates_by_id_and_sequence() -> None:
    o = make_order()
    r = rep("r1", ReportKind.PARTIAL_FILL, "40", "10", sequence=1)
    assert apply_report(o, r) == ReportOutcome.APPLIED
    assert apply_report(o, r) == ReportOutcome.DUPLICATE
    again = rep("r1-resent", ReportKind.PARTIAL_FILL, "40", "10", sequence=1)
    assert apply_report(o, again) == ReportOutcome.DUPLICATE
    assert o.filled_quantity == D(40)


def test_out_of_order_fills_by_cumulative_quantity() -> None:
    o = make_order()
    mark_sent(o)
    second = rep("b", ReportKind.PARTIAL_FILL, "30", "11", cumulative_quantity=D(60), sequence=3)
    first = rep("a", ReportKind.PARTIAL_FILL, "30", "10", cumulative_quantity=D(30), sequence=2)
    assert apply_report(o, second) == ReportOutcome.APPLIED
    assert o.filled_quantity == D(60)
    assert apply_report(o, first) == ReportOutcome.APPLIED
    assert o.filled_quantity == D(60)
    assert o.avg_fill_price == D("10.5")
    # an ack that arrives after fills is behind the order's progress
    assert apply_report(o, rep("ack", ReportKind.ACK, sequence=1)) == ReportOutcome.IGNORED_LATE
    assert o.status == S.PARTIALLY_FILLED


def test_fill_after_cancel_is_recorded_and_flagged() -> None:
    o = make_order()
    mark_sent(o)
    request_cancel(o)
    assert o.status == S.CANCEL_REQUESTED
    assert apply_report(o, rep("c", ReportKind.CANCELLED)) == ReportOutcome.APPLIED
    late = rep("f", ReportKind.PARTIAL_FILL, "25", "10")
    assert apply_report(o, late) == ReportOutcome.IGNORED_LATE
    assert o.status == S.CANCELLED
    assert o.filled_quantity == D(25)
    assert o.late_filled_quantity == D(25)


def test_fills_during_pending_cancel_and_cancel_reject() -> None:
    o = make_order()
    mark_sent(o)
    request_cancel(o)
    apply_report(o, rep("f1", ReportKind.PARTIAL_FILL, "10", "10"))
    assert o.status == S.CANCEL_REQUESTED
    assert apply_report(o, rep("cr", ReportKind.CANCEL_REJECTED)) == ReportOutcome.APPLIED
    assert o.status == S.PARTIALLY_FILLED
    assert apply_report(o, rep("cr2", ReportKind.CANCEL_REJECTED)) == ReportOutcome.IGNORED_LATE


def test_illegal_transitions_refused_without_change() -> None:
    o = make_order()
    mark_sent(o)
    apply_report(o, rep("f1", ReportKind.PARTIAL_FILL, "10", "10"))
    before = copy.deepcopy(o)
    with pytest.raises(IllegalTransition):
        apply_report(o, rep("rej", ReportKind.REJECTED))
    with pytest.raises(IllegalTransition):
        apply_report(o, rep("over", ReportKind.PARTIAL_FILL, "95", "10"))
    with pytest.raises(IllegalTransition):
        apply_report(o, rep("cum", ReportKind.PARTIAL_FILL, "1", "10", cumulative_quantity=D(101)))
    assert o == before
    with pytest.raises(IllegalTransition):
        mark_sent(o)
    apply_report(o, rep("f2", ReportKind.FILL, "90", "10"))
    with pytest.raises(IllegalTransition):
        request_cancel(o)
    with pytest.raises(InvalidInput):
        apply_report(o, rep("nop", ReportKind.PARTIAL_FILL, "1"))


def test_unknown_order_reports() -> None:
    o = make_order()
    other = ExecutionReport("x", "o-unknown", ReportKind.FILL, D(1), D(1))
    assert apply_report(o, other) == ReportOutcome.REJECTED_UNKNOWN
    assert route_report({"o1": o}, other) == ReportOutcome.REJECTED_UNKNOWN
    assert route_report({"o1": o}, rep("a", ReportKind.ACK)) == ReportOutcome.APPLIED


def test_cancel_of_new_order_is_local() -> None:
    o = make_order()
    request_cancel(o)
    assert o.status == S.CANCELLED


# ---------------------------------------------------------------- state machine property
report_strategy = st.builds(
    lambda rid, kind, qty, cum, seq: ExecutionReport(
        f"r{rid}",
        "o1",
        kind,
        D(qty) if kind in (ReportKind.PARTIAL_FILL, ReportKind.FILL) else D(0),
        D("10") if kind in (ReportKind.PARTIAL_FILL, ReportKind.FILL) and qty > 0 else None,
        D(cum) if cum is not None else None,
        seq,
    ),
    st.integers(0, 12),
    st.sampled_from(list(ReportKind)),
    st.integers(1, 60),
    st.one_of(st.none(), st.integers(0, 120)),
    st.one_of(st.none(), st.integers(0, 12)),
)
action_strategy = st.one_of(st.sampled_from(["send", "cancel"]), report_strategy)


@settings(max_examples=200, deadline=None)
@given(st.lists(action_strategy, max_size=25))
def test_random_report_sequences_keep_invariants(actions: list[object]) -> None:
    o = make_order("100")
    seen: set[str] = set()
    for action in actions:
        before = copy.deepcopy(o)
        try:
            if action == "send":
                mark_sent(o)
            elif action == "cancel":
                request_cancel(o)
            else:
                assert isinstance(action, ExecutionReport)
                outcome = apply_report(o, action)
                if action.report_id in seen:
                    assert outcome == ReportOutcome.DUPLICATE
                if outcome == ReportOutcome.DUPLICATE:
                    assert o == before
                else:
                    seen.add(action.report_id)
        except (IllegalTransition, InvalidInput):
            assert o == before  # refused reports change nothing
            continue
        # only legal status changes
        assert o.status == before.status or o.status in TRANSITIONS[before.status]
        if before.status in TERMINAL:
            assert o.status == before.status
        # filled never exceeds ordered, never decreases
        assert D(0) <= before.filled_quantity <= o.filled_quantity <= o.quantity
        assert o.priced_quantity <= o.quantity
        if o.status == S.FILLED:
            assert o.filled_quantity == o.quantity
        if o.status == S.PARTIALLY_FILLED:
            assert D(0) < o.filled_quantity < o.quantity
        # each report applied at most once
        assert len(o.applied_report_ids) == len(set(o.applied_report_ids))
        assert len(o.applied_sequences) == len(set(o.applied_sequences))


# ---------------------------------------------------------------- generation
def test_generate_orders_sells_first_when_cash_short() -> None:
    trades = [
        Trade("MSFT", Side.BUY, D(10), price=D("400")),
        Trade("AAPL", Side.SELL, D(3), (("L1", D(3)),), price=D("200")),
        Trade("AAPL", Side.SELL, D(2), (("L2", D(2)),), price=D("200")),
    ]
    orders = generate_orders("rec", "acc", trades, cash=D(1000), limit_offset_bps=D(10))
    assert [o.instrument for o in orders] == ["AAPL", "MSFT"]
    sell, buy = orders
    assert sell.quantity == D(5) and sell.lots == (("L1", D(3)), ("L2", D(2)))
    assert (sell.wave, buy.wave) == (0, 1)  # 4,000 of buys > 1,000 cash
    assert buy.limit_price == D("400.40") and sell.limit_price == D("199.80")
    assert buy.order_type == OrderType.LIMIT
    assert sell.order_id == order_id_for("rec", "acc", "AAPL")
    again = generate_orders("rec", "acc", trades, cash=D(10_000))
    assert [o.order_id for o in again] == [o.order_id for o in orders]
    assert {o.wave for o in again} == {0} and again[0].order_type == OrderType.MARKET


def test_generate_orders_validation() -> None:
    with pytest.raises(InvalidInput) as e:
        generate_orders("r", "a", [Trade("X", Side.BUY, D(0))])
    assert e.value.fields == ["trades[0].quantity"]
    with pytest.raises(InvalidInput) as e:
        generate_orders("r", "a", [Trade("X", Side.SELL, D(5), (("L", D(4)),))])
    assert e.value.fields == ["trades[0].lots"]
    with pytest.raises(InvalidInput) as e:
        generate_orders("r", "a", [Trade("X", Side.SELL, D(1)), Trade("X", Side.BUY, D(1))])
    assert e.value.fields == ["trades[1].side"]
    assert limit_price_for(Side.SELL, D("10"), D("0")) == D("10.00")


# ---------------------------------------------------------------- blocks
def test_block_allocation_by_hand() -> None:
    kids = [BlockChild("o-a", "a", D(300)), BlockChild("o-b", "b", D(300))]
    block = BlockOrder("b", "AAPL", Side.BUY, (*kids, BlockChild("o-c", "c", D(400))))
    # 500 filled, lot 100: ideal 150/150/200 -> base 100/100/200, remainder 100;
    # fractions 50/50/0 -> tie broken by account id: "a" gets the lot.
    assert allocate_fill(block, D(500), 100) == {"o-a": D(200), "o-b": D(100), "o-c": D(200)}
    # odd lot: 550 -> ideal 165/165/220 -> base 100/100/200; 150 left: a lot to "a"
    # (fraction 65 ties with b), then the odd 50 to "b" (next in the ranking).
    assert allocate_fill(block, D(550), 100) == {"o-a": D(200), "o-b": D(150), "o-c": D(200)}
    assert allocate_fill(block, D(1000), 100) == {"o-a": D(300), "o-b": D(300), "o-c": D(400)}
    with pytest.raises(InvalidInput):
        allocate_fill(block, D(1001))


def test_build_blocks_and_child_reports() -> None:
    o1 = Order("x1", "r", "acc-2", "AAPL", Side.BUY, D(30))
    o2 = Order("x2", "r", "acc-1", "AAPL", Side.BUY, D(10))
    o3 = Order("x3", "r", "acc-1", "MSFT", Side.SELL, D(5))
    blocks = build_blocks([o1, o2, o3], "blk")
    assert [b.block_id for b in blocks] == ["blk:MSFT:sell", "blk:AAPL:buy"]
    aapl = blocks[1]
    assert [c.account_id for c in aapl.children] == ["acc-1", "acc-2"]
    assert o1.block_id == "blk:AAPL:buy"
    alloc = allocate_fill(aapl, D(20))
    assert alloc == {"x2": D(5), "x1": D(15)}
    reports = child_fill_reports(aapl, alloc, D("101.5"))
    orders = {"x1": o1, "x2": o2}
    for r in reports:
        assert route_report(orders, r) == ReportOutcome.APPLIED
        assert route_report(orders, r) == ReportOutcome.DUPLICATE
    assert o1.filled_quantity == D(15) and o1.avg_fill_price == D("101.5")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 5000), min_size=1, max_size=8),
    st.integers(1, 100),
    st.data(),
)
def test_block_allocation_sums_exactly(
    quantities: list[int], lot: int, data: st.DataObject
) -> None:
    children = tuple(
        BlockChild(f"o{i}", f"acc{(i * 7) % 5}", D(q)) for i, q in enumerate(quantities)
    )
    block = BlockOrder("b", "X", Side.SELL, children)
    filled = D(data.draw(st.integers(0, sum(quantities))))
    alloc = allocate_fill(block, filled, lot)
    assert sum(alloc.values()) == filled
    for c in children:
        assert D(0) <= alloc[c.order_id] <= c.quantity
    assert alloc == allocate_fill(block, filled, lot)  # deterministic


def test_implementation_shortfall() -> None:
    from rebalancer.domain.orders import implementation_shortfall_bps

    o = make_order()
    assert implementation_shortfall_bps(o) is None
    o.arrival_price = D("10")
    apply_report(o, rep("f", ReportKind.FILL, "100", "10.01"))
    assert implementation_shortfall_bps(o) == pytest.approx(10.0)
    o.side = Side.SELL
    assert implementation_shortfall_bps(o) == pytest.approx(-10.0)
