"""A settled fill attributed to sleeves: hand-checked cases and properties (the attribution
keeps adding up to the pooled shares and cash, nothing goes negative)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.orders import Side
from rebalancer.domain.sleeve_attribution import Attribution, SleeveTarget, settle_fill

TARGETS = [
    SleeveTarget("core", 0.5, {"X": 0.8, "Y": 0.2}),
    SleeveTarget("sat", 0.5, {"Y": 0.6, "Z": 0.4}),
]
PRICES = {"X": 100.0, "Y": 50.0, "Z": 20.0, "S": 10.0}


def test_a_buy_goes_to_the_sleeve_short_of_it_and_that_sleeve_pays() -> None:
    # NAV 10,000 + 5,000 cash = 15,000 ... core wants 0.5 * 0.2 * NAV of Y; sat 0.5 * 0.6
    att = Attribution({"core": {"X": 100.0}, "sat": {"Z": 250.0}}, {"core": 0.0, "sat": 5_000.0})
    nav = 100 * 100 + 250 * 20 + 5_000.0  # 20,000
    assert nav == 20_000.0
    # shortfalls in Y (shares): core 0.5*0.2*20,000/50 = 40, sat 0.5*0.6*20,000/50 = 120
    got = settle_fill(att, TARGETS, PRICES, "Y", Side.BUY, 80.0, -4_001.0)
    assert got.holdings["core"]["Y"] == pytest.approx(20.0)
    assert got.holdings["sat"]["Y"] == pytest.approx(60.0)
    # core has no cash: it pays its quarter (1,000.25) by borrowing from sat
    assert got.cash["core"] == 0.0
    assert got.cash["sat"] == pytest.approx(5_000.0 - 4_001.0)
    assert got.holdings["core"]["X"] == 100.0 and got.holdings["sat"]["Z"] == 250.0


def test_a_buy_beyond_every_shortfall_and_a_substitute_nobody_targets() -> None:
    att = Attribution({"core": {}, "sat": {}}, {"core": 1_000.0, "sat": 1_000.0})
    # a substitute S: no sleeve targets it, split by share
    got = settle_fill(att, TARGETS, PRICES, "S", Side.BUY, 10.0, -100.0)
    assert got.holdings["core"]["S"] == pytest.approx(5.0)
    assert got.holdings["sat"]["S"] == pytest.approx(5.0)
    assert got.cash == pytest.approx({"core": 950.0, "sat": 950.0})
    # X: core's shortfall is 0.5 * 0.8 * 2,000 / 100 = 8 shares, the 2 beyond go pro rata to
    # the target weights (core alone targets X)
    got = settle_fill(att, TARGETS, PRICES, "X", Side.BUY, 10.0, -1_000.0)
    assert got.holdings["core"]["X"] == pytest.approx(10.0) and "X" not in got.holdings["sat"]
    assert got.cash == pytest.approx({"core": 0.0, "sat": 1_000.0})


def test_a_sell_comes_from_the_excess_first_then_pro_rata() -> None:
    # both hold Y; sat targets 0.6 of its half, core 0.2 of its half
    att = Attribution({"core": {"Y": 100.0}, "sat": {"Y": 100.0}}, {"core": 0.0, "sat": 0.0})
    # NAV 10,000: core wants 0.5*0.2*10,000/50 = 20 (excess 80), sat wants 60 (excess 40)
    got = settle_fill(att, TARGETS, PRICES, "Y", Side.SELL, 60.0, 3_000.0)
    assert got.holdings["core"]["Y"] == pytest.approx(60.0)
    assert got.holdings["sat"]["Y"] == pytest.approx(80.0)
    assert got.cash == pytest.approx({"core": 2_000.0, "sat": 1_000.0})
    # selling more than the excess (120): the remaining 30 pro rata to what is left (20, 60)
    got = settle_fill(att, TARGETS, PRICES, "Y", Side.SELL, 150.0, 7_500.0)
    assert got.holdings["core"]["Y"] == pytest.approx(20.0 - 7.5)
    assert got.holdings["sat"]["Y"] == pytest.approx(60.0 - 22.5)
    with pytest.raises(InvalidInput):
        settle_fill(att, TARGETS, PRICES, "Y", Side.SELL, 201.0, 10_050.0)


quantities = st.floats(0.0, 500.0).map(lambda q: round(q, 3))


@settings(max_examples=150, deadline=None)
@given(
    core=st.fixed_dictionaries({"X": quantities, "Y": quantities}),
    sat=st.fixed_dictionaries({"Y": quantities, "Z": quantities}),
    cash=st.tuples(st.floats(0, 50_000), st.floats(0, 50_000)),
    inst=st.sampled_from(["X", "Y", "Z", "S"]),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    frac=st.floats(0.001, 1.0),
    fee=st.floats(0.0, 20.0),
)
def test_the_attribution_keeps_adding_up(
    core: dict[str, float],
    sat: dict[str, float],
    cash: tuple[float, float],
    inst: str,
    side: Side,
    frac: float,
    fee: float,
) -> None:
    att = Attribution({"core": core, "sat": sat}, {"core": cash[0], "sat": cash[1]})
    pooled = att.pooled()
    total_cash = sum(att.cash.values())
    price = PRICES[inst]
    if side is Side.SELL:
        qty = round(pooled.get(inst, 0.0) * frac, 3)
        change = qty * price - fee
    else:
        qty = round(total_cash / price * frac, 3)
        change = -(qty * price + fee)
    if qty <= 0 or total_cash + change < 0:
        return
    got = settle_fill(att, TARGETS, PRICES, inst, side, qty, change)
    sign = 1.0 if side is Side.BUY else -1.0
    expect = {**pooled, inst: pooled.get(inst, 0.0) + sign * qty}
    assert got.adds_up(expect, total_cash + change)
    assert all(q >= 0 for per in got.holdings.values() for q in per.values())
    assert all(c >= 0 for c in got.cash.values())
    others = {k: v for k, v in pooled.items() if k != inst}
    assert {k: v for k, v in got.pooled().items() if k != inst} == pytest.approx(others)
