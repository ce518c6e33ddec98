"""Tests of the simulated execution venue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.contracts import (
    ExecutionReportV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    ReportKind,
)
from rebalancer.simulators import SimulatedVenue

D = Decimal
MARKET = D("100.00")


def _order(order_id: str = "o-1", **kw: Any) -> OrderPlacedV1:
    data: dict[str, Any] = {
        "order_id": order_id,
        "recommendation_id": "rec-1",
        "account_id": "acct-1",
        "instrument": "AAPL",
        "side": "buy",
        "quantity": "100",
        "arrival_price": "100",
        **kw,
    }
    return OrderPlacedV1.model_validate(data)


def _check_stream(order: OrderPlacedV1, reports: list[ExecutionReportV1]) -> None:
    """The invariants every order's (deduplicated, sorted) report stream satisfies."""
    assert [r.sequence for r in reports] == list(range(1, len(reports) + 1))
    assert len({r.report_id for r in reports}) == len(reports)
    cum = D(0)
    for r in reports:
        assert (r.order_id, r.account_id, r.instrument, r.side) == (
            order.order_id,
            order.account_id,
            order.instrument,
            order.side,
        )
        cum += r.fill_quantity
        assert r.cumulative_quantity == cum
        if r.kind.is_fill:
            assert r.fill_price is not None
            if order.side == "buy":
                assert r.fill_price >= MARKET or order.limit_price is not None
            else:
                assert r.fill_price <= MARKET or order.limit_price is not None
            if order.limit_price is not None:
                if order.side == "buy":
                    assert r.fill_price <= order.limit_price
                else:
                    assert r.fill_price >= order.limit_price
    assert cum <= order.quantity
    finals = [r for r in reports if r.kind.is_final]
    assert len(finals) <= 1
    if finals:
        assert reports[-1] is finals[0]
        if finals[0].kind is ReportKind.FILL:
            assert cum == order.quantity
        else:
            assert cum < order.quantity or finals[0].kind is ReportKind.FILL
    if reports and reports[0].kind is not ReportKind.REJECTED:
        assert reports[0].kind is ReportKind.ACK


def _dedup(reports: list[ExecutionReportV1]) -> list[ExecutionReportV1]:
    return sorted({r.report_id: r for r in reports}.values(), key=lambda r: r.sequence)


def test_simple_market_buy_fills_with_adverse_slippage() -> None:
    venue = SimulatedVenue(seed=1, slippage_bps=10)
    reports = venue.handle_order(_order(), MARKET)
    assert [r.kind for r in reports] == ["ack", "fill"]
    fill = reports[-1]
    assert fill.fill_quantity == fill.cumulative_quantity == D(100)
    assert fill.fill_price is not None
    assert MARKET * D("1.0005") <= fill.fill_price <= MARKET * D("1.0015")
    assert [r.report_id for r in reports] == ["o-1:1", "o-1:2"]
    assert reports[0].venue_time < reports[1].venue_time


def test_sell_receives_less() -> None:
    reports = SimulatedVenue(seed=1).handle_order(_order(side="sell"), MARKET)
    assert reports[-1].fill_price is not None and reports[-1].fill_price < MARKET


def test_zero_slippage_fills_at_market() -> None:
    reports = SimulatedVenue(seed=1, slippage_bps=0).handle_order(_order(), MARKET)
    assert reports[-1].fill_price == MARKET


def test_partial_fills_sum_to_the_order() -> None:
    venue = SimulatedVenue(seed=3, partial_fill_probability=1.0, max_partial_fills=4)
    reports = venue.handle_order(_order(), MARKET)
    kinds = [r.kind for r in reports]
    assert kinds[0] == "ack" and kinds[-1] == "fill"
    assert 2 <= kinds.count("partial_fill") + 1 <= 4
    _check_stream(_order(), reports)


def test_one_share_cannot_be_split() -> None:
    venue = SimulatedVenue(seed=3, partial_fill_probability=1.0)
    reports = venue.handle_order(_order(quantity="1"), MARKET)
    assert [r.kind for r in reports] == ["ack", "fill"]


def test_random_reject_has_a_reason_and_no_ack() -> None:
    reports = SimulatedVenue(seed=1, reject_probability=1.0).handle_order(_order(), MARKET)
    assert [r.kind for r in reports] == ["rejected"]
    assert reports[0].reason
    assert reports[0].sequence == 1


def test_insufficient_liquidity() -> None:
    venue = SimulatedVenue(max_adv_fraction=0.1)
    reports = venue.handle_order(_order(quantity="1000"), MARKET, adv_shares=5000)
    assert reports[0].kind is ReportKind.REJECTED
    assert reports[0].reason and reports[0].reason.startswith("insufficient liquidity")
    ok = venue.handle_order(_order("o-2", quantity="400"), MARKET, adv_shares=5000)
    assert ok[-1].kind is ReportKind.FILL


def test_price_band() -> None:
    venue = SimulatedVenue(price_band_fraction=0.05)
    order = _order(order_type="limit", limit_price="90")
    reports = venue.handle_order(order, MARKET)
    assert reports[0].kind is ReportKind.REJECTED
    assert reports[0].reason and reports[0].reason.startswith("price band")


def test_limit_buy_fills_only_within_limit() -> None:
    venue = SimulatedVenue(seed=2, slippage_bps=50)
    order = _order(order_type="limit", limit_price="100.10")
    reports = venue.handle_order(order, MARKET)
    assert reports[-1].kind is ReportKind.FILL
    assert reports[-1].fill_price == D("100.10")  # capped at the limit


def test_limit_not_marketable_rests_then_fills_on_market() -> None:
    venue = SimulatedVenue(seed=2)
    order = _order(order_type="limit", limit_price="99", time_in_force="gtc")
    assert [r.kind for r in venue.handle_order(order, MARKET)] == ["ack"]
    assert venue.open_orders() == ["o-1"]
    assert venue.on_market({"AAPL": D("99.50")}) == []
    assert venue.end_of_day() == []  # gtc survives the close
    fills = venue.on_market({"AAPL": D("98.90")})
    assert [r.kind for r in fills] == ["fill"]
    assert fills[0].fill_price is not None and fills[0].fill_price <= D(99)
    assert venue.open_orders() == []


def test_day_order_expires_and_ioc_cancels() -> None:
    venue = SimulatedVenue(seed=2)
    day = _order("o-day", side="sell", order_type="limit", limit_price="101")
    ioc = _order("o-ioc", side="sell", order_type="limit", limit_price="101", time_in_force="ioc")
    assert [r.kind for r in venue.handle_order(day, MARKET)] == ["ack"]
    ioc_reports = venue.handle_order(ioc, MARKET)
    assert [r.kind for r in ioc_reports] == ["ack", "cancelled"]
    assert ioc_reports[-1].reason
    expired = venue.end_of_day()
    assert [(r.order_id, r.kind) for r in expired] == [("o-day", "expired")]
    assert expired[0].cumulative_quantity == 0


def test_cancel_after_stalled_partial_cancels_the_remainder() -> None:
    venue = SimulatedVenue(seed=5, partial_fill_probability=1.0, stall_probability=1.0)
    reports = venue.handle_order(_order(), MARKET)
    assert reports[-1].kind is ReportKind.PARTIAL_FILL
    filled = reports[-1].cumulative_quantity
    assert 0 < filled < 100
    cancel = OrderCancelRequestedV1(order_id="o-1", account_id="acct-1", reason="user request")
    cancelled = venue.handle_cancel(cancel)
    assert [r.kind for r in cancelled] == ["cancelled"]
    assert cancelled[0].cumulative_quantity == filled
    assert cancelled[0].fill_quantity == 0
    assert "user request" in (cancelled[0].reason or "")
    _check_stream(_order(), reports + cancelled)
    assert venue.handle_cancel(cancel) == []  # already final


def test_cancel_of_filled_or_unknown_order_does_nothing() -> None:
    venue = SimulatedVenue()
    venue.handle_order(_order(), MARKET)
    cancel = OrderCancelRequestedV1(order_id="o-1", account_id="acct-1", reason="late")
    assert venue.handle_cancel(cancel) == []
    unknown = OrderCancelRequestedV1(order_id="nope", account_id="acct-1", reason="x")
    assert venue.handle_cancel(unknown) == []


def test_redelivered_order_gets_the_same_reports() -> None:
    venue = SimulatedVenue(seed=9, partial_fill_probability=0.5)
    first = venue.handle_order(_order(), MARKET)
    assert venue.handle_order(_order(), D("120")) == first


def test_duplicates_and_reordering() -> None:
    venue = SimulatedVenue(
        seed=4, partial_fill_probability=1.0, duplicate_probability=1.0, reorder_probability=1.0
    )
    raw = venue.handle_order(_order(), MARKET)
    unique = _dedup(raw)
    assert len(raw) == 2 * len(unique)
    assert raw[: len(unique)] != unique or raw[len(unique) :] != unique
    _check_stream(_order(), unique)


def test_outcome_per_order_does_not_depend_on_arrival_order() -> None:
    kw = {"reject_probability": 0.3, "partial_fill_probability": 0.5}
    a, b = SimulatedVenue(seed=11, **kw), SimulatedVenue(seed=11, **kw)
    orders = [_order(f"o-{i}") for i in range(6)]
    ra = {o.order_id: a.handle_order(o, MARKET) for o in orders}
    rb = {o.order_id: b.handle_order(o, MARKET) for o in reversed(orders)}
    for oid in ra:
        strip = [(r.kind, r.fill_quantity, r.fill_price, r.reason) for r in ra[oid]]
        assert strip == [(r.kind, r.fill_quantity, r.fill_price, r.reason) for r in rb[oid]]


def test_deterministic_by_seed() -> None:
    kw: dict[str, Any] = {"reject_probability": 0.2, "partial_fill_probability": 0.6}
    runs = [
        [SimulatedVenue(seed=s, **kw).handle_order(_order(f"o-{i}"), MARKET) for i in range(5)]
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="reject_probability"):
        SimulatedVenue(reject_probability=1.5)
    with pytest.raises(ValueError, match="market_price"):
        SimulatedVenue().handle_order(_order(), 0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    quantity=st.integers(1, 500),
    side=st.sampled_from(["buy", "sell"]),
    limit_offset=st.one_of(st.none(), st.integers(-3, 3)),
    tif=st.sampled_from(["day", "gtc", "ioc"]),
    probabilities=st.tuples(*[st.sampled_from([0.0, 0.3, 1.0])] * 4),
)
def test_report_stream_invariants(
    seed: int,
    quantity: int,
    side: str,
    limit_offset: int | None,
    tif: str,
    probabilities: tuple[float, float, float, float],
) -> None:
    reject, partial, stall, dup = probabilities
    venue = SimulatedVenue(
        seed,
        reject,
        partial,
        slippage_bps=20,
        stall_probability=stall,
        duplicate_probability=dup,
        reorder_probability=dup,
    )
    kw: dict[str, Any] = {"quantity": str(quantity), "side": side, "time_in_force": tif}
    if limit_offset is not None:
        kw |= {"order_type": "limit", "limit_price": str(MARKET + limit_offset)}
    order = _order(**kw)
    reports = venue.handle_order(order, MARKET)
    reports += venue.handle_cancel(
        OrderCancelRequestedV1(order_id=order.order_id, account_id="acct-1", reason="test")
    )
    stream = _dedup(reports)
    _check_stream(order, stream)
    assert stream[-1].kind.is_final
