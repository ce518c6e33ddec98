"""Settlement dates, lots, realized gains and cash."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.calendar import BusinessCalendar
from rebalancer.domain.errors import Conflict, InvalidInput
from rebalancer.domain.model import Account, Instrument, TaxLot
from rebalancer.domain.orders import Side
from rebalancer.domain.settlement import (
    SettledFill,
    SettlementStatus,
    Term,
    apply_settlement,
    buying_power,
    hifo_lots,
    lots_for_partial_fill,
    overdue_since,
    settlement_date,
    settlement_status,
)

D = Decimal
CAL = BusinessCalendar(holidays=frozenset({date(2024, 3, 29)}))


def account() -> Account:
    return Account(
        "acc",
        "t",
        D("1000.00"),
        lots=[
            TaxLot("L1", "AAPL", D(10), D("100"), date(2022, 1, 3)),
            TaxLot("L2", "AAPL", D(5), D("180"), date(2024, 1, 2)),
            TaxLot("L3", "AAPL", D(5), D("150"), date(2023, 6, 1)),
        ],
    )


def fill(
    side: Side, qty: str, price: str, lots: tuple[tuple[str, Decimal], ...] = (), **kw: object
) -> SettledFill:
    return SettledFill(
        kw.pop("fill_id", "F1"),  # type: ignore[arg-type]
        "o1",
        "acc",
        "AAPL",
        side,
        D(qty),
        D(price),
        kw.pop("trade_date", date(2024, 3, 1)),  # type: ignore[arg-type]
        D(kw.pop("fee", "0")),  # type: ignore[arg-type]
        lots,
    )


def test_settlement_dates() -> None:
    t1 = Instrument("AAPL", settlement_days=1)
    t2 = Instrument("BND", settlement_days=2)
    assert settlement_date(date(2024, 3, 28), t1, CAL) == date(2024, 4, 1)  # skips Good Friday
    assert settlement_date(date(2024, 3, 27), t2, CAL) == date(2024, 4, 1)
    assert settlement_date(date(2024, 3, 22), t1) == date(2024, 3, 25)  # Friday -> Monday
    assert settlement_date(date(2024, 3, 28), Instrument("X", settlement_days=0)) == date(
        2024, 3, 28
    )


def test_buy_creates_lot_with_fees_in_basis() -> None:
    acc = account()
    r = apply_settlement(acc, fill(Side.BUY, "4", "200", fill_id="B1", fee="0.50"))
    assert r.new_lot is not None and r.new_lot.cost_basis == D("200.50")
    assert r.new_lot.acquired == date(2024, 3, 1)
    assert acc.cash == D("1000.00") - D("802.00")
    assert acc.quantities()["AAPL"] == D(24)
    with pytest.raises(Conflict):
        apply_settlement(acc, fill(Side.BUY, "4", "200", fill_id="B1"))


def test_sell_named_lots_with_terms() -> None:
    acc = account()
    r = apply_settlement(
        acc, fill(Side.SELL, "12", "160", (("L1", D(10)), ("L2", D(2))), fee="0.10")
    )
    gains = {g.lot_id: g for g in r.realized}
    assert gains["L1"].gain == D("599.00")  # (159.90 - 100) * 10
    assert gains["L1"].term == Term.LONG
    assert gains["L2"].gain == D("-40.20")  # (159.90 - 180) * 2
    assert gains["L2"].term == Term.SHORT
    assert r.realized_gain == D("558.80")
    assert acc.cash == D("1000.00") + D("1918.80")
    assert [(lot.lot_id, lot.quantity) for lot in acc.lots] == [("L2", D(3)), ("L3", D(5))]


def test_long_term_boundary_is_more_than_365_days() -> None:
    acc = Account("acc", "t", D(0), lots=[TaxLot("L", "AAPL", D(2), D(1), date(2023, 3, 1))])
    r = apply_settlement(acc, fill(Side.SELL, "1", "2", trade_date=date(2024, 2, 29)))  # 365 d
    assert r.realized[0].term == Term.SHORT
    r2 = apply_settlement(acc, fill(Side.SELL, "1", "2", fill_id="F2", trade_date=date(2024, 3, 1)))
    assert r2.realized[0].term == Term.LONG


def test_sell_without_lots_uses_highest_cost_first() -> None:
    acc = account()
    r = apply_settlement(acc, fill(Side.SELL, "7", "170"))
    assert [(g.lot_id, g.quantity) for g in r.realized] == [("L2", D(5)), ("L3", D(2))]
    assert hifo_lots(acc.lots, D(100)) == (("L3", D(3)), ("L1", D(10)))


def test_sell_errors_leave_account_unchanged() -> None:
    acc = account()
    before = (acc.cash, [(lot.lot_id, lot.quantity) for lot in acc.lots])
    with pytest.raises(Conflict):
        apply_settlement(acc, fill(Side.SELL, "21", "1"))
    with pytest.raises(Conflict) as e:
        apply_settlement(acc, fill(Side.SELL, "1", "1", (("NOPE", D(1)),)))
    assert e.value.fields == ["fills.F1.lots[0]"]
    with pytest.raises(Conflict):
        apply_settlement(acc, fill(Side.SELL, "6", "1", (("L2", D(6)),)))
    with pytest.raises(InvalidInput):
        apply_settlement(acc, fill(Side.SELL, "3", "1", (("L1", D(2)),)))
    with pytest.raises(InvalidInput):
        apply_settlement(acc, fill(Side.SELL, "0", "1"))
    assert (acc.cash, [(lot.lot_id, lot.quantity) for lot in acc.lots]) == before


def test_partial_fill_lot_slicing_and_status() -> None:
    lots = (("L1", D(10)), ("L2", D(5)))
    assert lots_for_partial_fill(lots, D(0), D(4)) == (("L1", D(4)),)
    assert lots_for_partial_fill(lots, D(8), D(4)) == (("L1", D(2)), ("L2", D(2)))
    with pytest.raises(InvalidInput):
        lots_for_partial_fill(lots, D(12), D(4))
    sd = date(2024, 3, 28)
    assert settlement_status(sd, date(2024, 4, 1), confirmed=True) == SettlementStatus.SETTLED
    assert settlement_status(sd, sd, confirmed=False) == SettlementStatus.PENDING
    assert (
        settlement_status(sd, date(2024, 4, 1), confirmed=False, calendar=CAL)
        == SettlementStatus.FAILED
    )
    grace = settlement_status(
        sd, date(2024, 4, 1), confirmed=False, calendar=CAL, grace_business_days=1
    )
    assert grace == SettlementStatus.PENDING
    assert buying_power(D(1000), [fill(Side.BUY, "2", "100", fee="1"), (D(1), D(50))]) == D(748)


fill_strategy = st.tuples(
    st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 30), st.integers(1, 500)
)


@settings(max_examples=150, deadline=None)
@given(st.lists(fill_strategy, max_size=20))
def test_positions_after_settlement_equal_initial_plus_fills(
    fills: list[tuple[Side, int, int]],
) -> None:
    acc = account()
    initial_qty, initial_cash = acc.quantities()["AAPL"], acc.cash
    settled_qty, cash_flow = D(0), D(0)
    for i, (side, q, p) in enumerate(fills):
        f = fill(
            side,
            str(q),
            str(p),
            fill_id=f"F{i}",
            fee="0.01",
            trade_date=date(2024, 1, 1) + timedelta(days=i),
        )
        try:
            r = apply_settlement(acc, f)
        except Conflict:
            assert side == Side.SELL  # only over-selling is refused
            continue
        sign = 1 if side == Side.BUY else -1
        settled_qty += sign * D(q)
        cash_flow += -D(q) * (D(p) + D("0.01")) if side == Side.BUY else D(q) * (D(p) - D("0.01"))
        if side == Side.SELL:
            assert sum(g.quantity for g in r.realized) == D(q)
    assert acc.quantities().get("AAPL", D(0)) == initial_qty + settled_qty
    assert acc.cash == initial_cash + cash_flow
    assert all(lot.quantity > 0 for lot in acc.lots)


def test_overdue_since_counts_business_days_and_the_grace() -> None:
    # traded Thu 2024-03-28, T+1 skips Good Friday (holiday) and the weekend: Mon 04-01
    traded = date(2024, 3, 28)
    kw = {"grace_business_days": 1, "calendar": CAL}
    assert overdue_since(traded, 1, date(2024, 4, 1), **kw) is None  # settlement day
    assert overdue_since(traded, 1, date(2024, 4, 2), **kw) is None  # within the grace
    assert overdue_since(traded, 1, date(2024, 4, 3), **kw) == date(2024, 4, 1)
    assert overdue_since(traded, 2, date(2024, 4, 3), **kw) is None  # T+2: Tue, grace Wed
    assert overdue_since(traded, 1, date(2024, 4, 2), grace_business_days=0, calendar=CAL) == (
        date(2024, 4, 1)
    )
    with pytest.raises(InvalidInput):
        overdue_since(traded, -1, date(2024, 4, 3), grace_business_days=0)


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 20),
)
def test_overdue_is_monotone_in_time(traded: date, days: int, grace: int, later: int) -> None:
    """Once overdue, a fill stays overdue; never overdue on or before its expected date."""
    expected = CAL.add_business_days(traded, days)
    as_of = traded + timedelta(days=later)
    got = overdue_since(traded, days, as_of, grace_business_days=grace, calendar=CAL)
    if as_of <= expected:
        assert got is None
    if got is not None:
        assert got == expected
        assert (
            overdue_since(
                traded, days, as_of + timedelta(days=1), grace_business_days=grace, calendar=CAL
            )
            == expected
        )
