"""Tests of the market-data feed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from rebalancer.simulators import PriceFeed, load_sp500_closes
from rebalancer.simulators.market import half_spread_bps, to_price


def _run(feed: PriceFeed, days: int) -> list[list[tuple[str, Decimal]]]:
    return [[(b.instrument, b.close) for b in feed.next_bars()] for _ in range(days)]


def test_simulated_feed_is_deterministic_by_seed() -> None:
    def make(seed: int) -> PriceFeed:
        return PriceFeed(["AGG", "SHY"], date(2024, 1, 5), seed=seed, replay=False)

    assert _run(make(1), 10) == _run(make(1), 10)
    assert _run(make(1), 10) != _run(make(2), 10)


def test_simulated_dates_are_weekdays_and_bars_are_valid() -> None:
    feed = PriceFeed(
        ["AGG", "SHY"],
        date(2024, 1, 5),
        seed=1,
        initial_prices={"AGG": 98.0, "SHY": 82.0},
        daily_volatility={"AGG": 0.004, "SHY": 0.0005},
        replay=False,
    )
    assert feed.current_prices() == {"AGG": Decimal("98.0000"), "SHY": Decimal("82.0000")}
    md = feed.next_market_data()
    assert md.as_of == date(2024, 1, 8)  # Friday -> Monday
    for _ in range(60):
        md = feed.next_market_data()
        assert md.as_of.weekday() < 5
        for bar in md.bars:
            assert bar.close > 0
            assert bar.volume is not None and bar.adv_shares is not None and bar.adv_shares > 0
            assert bar.half_spread_bps is not None and 0.5 <= bar.half_spread_bps <= 50
    vol_agg = feed.estimated_volatility("AGG")
    vol_shy = feed.estimated_volatility("SHY")
    assert 0.002 < vol_agg < 0.007
    assert vol_shy < vol_agg


def test_shock_moves_the_next_close() -> None:
    def make() -> PriceFeed:
        return PriceFeed(["X"], date(2024, 1, 5), seed=1, replay=False)

    plain, shocked = make(), make()
    shocked.shock({"X": 0.10})
    p = plain.next_bars()[0].close
    s = shocked.next_bars()[0].close
    assert s == pytest.approx(p * Decimal("1.1"), rel=Decimal("1e-6"))
    with pytest.raises(KeyError):
        plain.shock({"Y": 0.1})


def test_replay_uses_real_closes_and_simulates_the_rest() -> None:
    data = load_sp500_closes()
    start = date(2022, 6, 1)
    feed = PriceFeed(["AAPL", "XOM", "AGG"], start, seed=1)
    i = data.index_on_or_before(start)
    assert feed.as_of == data.dates[i]
    assert feed.current_prices()["AAPL"] == to_price(float(data.closes["AAPL"][i]))
    assert feed.current_prices()["AGG"] == Decimal("100.0000")
    md = feed.next_market_data()
    assert md.as_of == data.dates[i + 1]
    bars = {b.instrument: b for b in md.bars}
    assert bars["AAPL"].close == to_price(float(data.closes["AAPL"][i + 1]))
    assert bars["XOM"].close == to_price(float(data.closes["XOM"][i + 1]))
    assert bars["AAPL"].daily_volatility is not None
    assert 0.005 < bars["AAPL"].daily_volatility < 0.08  # estimated from real returns


def test_replay_continues_by_simulation_after_the_data_set() -> None:
    data = load_sp500_closes()
    feed = PriceFeed(["AAPL"], data.dates[-2], seed=1)
    assert feed.next_market_data().as_of == data.dates[-1]
    after = feed.next_market_data()
    assert after.as_of > data.dates[-1]
    assert after.as_of.weekday() < 5
    assert after.bars[0].close > 0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="instruments"):
        PriceFeed([], date(2024, 1, 1), replay=False)
    with pytest.raises(ValueError, match=r"initial_prices\.X"):
        PriceFeed(["X"], date(2024, 1, 1), initial_prices={"X": 0.0}, replay=False)
    with pytest.raises(ValueError, match="start"):
        PriceFeed(["AAPL"], date(1980, 1, 1))


def test_half_spread_model() -> None:
    assert half_spread_bps(0.015, 1e9) == 2.0
    assert half_spread_bps(0.0, 1e12) == 0.5
    assert half_spread_bps(1.0, 1.0) == 50.0
