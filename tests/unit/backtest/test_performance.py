"""Service-side performance metrics (pure functions) with hand-computed values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest

from rebalancer.analytics import performance as perf


def test_is_optimal_uses_half_a_percent_of_the_stakes_plus_the_threshold() -> None:
    # stakes f(0) - f* = 0.01; tolerance 0.005 * 0.01 = 5e-5 (+ 1 USD / 100000 NAV = 1e-5)
    assert perf.is_optimal(0.00006, 0.01, 0.0, 1.0, 100_000)
    assert not perf.is_optimal(0.00007, 0.01, 0.0, 1.0, 100_000)
    # not trading when the whole stake is below the net-benefit threshold is optimal
    assert perf.is_optimal(0.00001, 0.00001, 0.0, 1.0, 100_000)


def test_success_metrics_against_their_targets() -> None:
    d = perf.average_drift({"a": 0.01, "b": 0.04})
    assert (d.value, d.met, d.sample) == (pytest.approx(0.025), False, 2)
    assert perf.average_drift({}).met is None
    o = perf.optimal_share([True] * 19 + [False, None])
    assert (o.value, o.met, o.sample) == (pytest.approx(0.95), True, 20)
    e = perf.successful_executions({"filled": 96, "rejected": 4, "sent": 7})
    assert (e.value, e.met, e.sample) == (pytest.approx(0.96), True, 100)


def test_effectiveness_is_drift_removed_per_bp_of_cost() -> None:
    obj = {"spread_and_fees": 0.0004, "impact": 0.0001, "spread_and_fees_currency": 40.0,
           "impact_currency": 10.0}  # fmt: skip
    resp = {"decision": "rebalance", "drift_before": {"account": 0.06},
            "drift_after": {"account": 0.01}, "objective": obj}  # fmt: skip
    out = perf.effectiveness([resp, {**resp, "decision": "no_trade"}])
    # 5 % of NAV removed for 5 bp of cost
    assert out["rebalances"] == 1
    assert out["drift_removed_per_bp"] == pytest.approx(0.01)
    assert out["estimated_cost_currency"] == pytest.approx(50.0)


@dataclass
class Fill:
    instrument: str
    side: str
    quantity: float
    price: float
    arrival_price: float | None


def test_attribution_and_frequency() -> None:
    fills = [Fill("A", "sell", 10, 100.0, 101.0), Fill("B", "buy", 5, 50.0, 49.0)]
    out = perf.attribution(fills, {"A": 110.0, "B": 60.0})
    # selling A at 100 missed +10 x 10; buying B at 50 earned +10 x 5
    assert out["rebalancing_pnl_vs_buy_and_hold"] == pytest.approx(-100.0 + 50.0)
    # sold 1 below arrival (cost 10), bought 1 above (cost 5)
    assert out["implementation_shortfall"] == pytest.approx(10.0 + 5.0)
    f = perf.frequency(
        [("a", datetime(2024, 1, 1)), ("a", datetime(2024, 1, 31)), ("b", datetime(2024, 1, 5))],
        accounts=2,
    )
    assert f == {"rebalances": 3, "per_account": 1.5, "mean_days_between": 30.0}


def test_cost_analysis_sets_estimates_against_the_realized_shortfall() -> None:
    obj = {"spread_and_fees_currency": 40.0, "impact_currency": 10.0, "tax_currency": 120.0}
    resp = {"decision": "rebalance", "objective": obj,
            "trades": [{"value": 60_000.0}, {"value": 40_000.0}]}  # fmt: skip
    fills = [Fill("A", "sell", 10, 100.0, 101.0), Fill("B", "buy", 5, 50.0, 49.0),
             Fill("C", "buy", 1, 10.0, None)]  # fmt: skip
    out = perf.cost_analysis([resp, {**resp, "decision": "no_trade"}], fills)
    assert out["rebalances"] == 1 and out["traded_value"] == pytest.approx(100_000.0)
    # 50 of estimated spread + impact on 100,000 traded: 5 bps
    assert out["estimated_cost_bps"] == pytest.approx(5.0)
    assert out["estimated_tax_currency"] == pytest.approx(120.0)
    # shortfall 10 + 5 on 1000 + 250 filled (the fill without arrival price is left out)
    assert out["realized_cost_currency"] == pytest.approx(15.0)
    assert out["filled_value"] == pytest.approx(1250.0)
    assert out["realized_cost_bps"] == pytest.approx(120.0)
    empty = perf.cost_analysis([], [])
    assert empty["estimated_cost_bps"] is None and empty["realized_cost_bps"] is None


def test_band_sweep_turns_counts_into_shares_and_rates() -> None:
    counts = [perf.BandCount(0.02, snapshots=40, accounts=4, beyond=10, accounts_beyond=3,
                             entries=6),
              perf.BandCount(0.05, 40, 4, 0, 0, 0)]  # fmt: skip
    rows = perf.band_sweep(counts, window_days=60)
    # 6 entries over 4 accounts and two 30-day periods
    assert rows[0] == {"width": 0.02, "snapshots_beyond": 0.25, "accounts_beyond": 3.0,
                       "entries": 6.0, "entries_per_account_per_30_days": 0.75}  # fmt: skip
    assert rows[1]["entries_per_account_per_30_days"] == 0.0
    assert perf.band_sweep([perf.BandCount(0.01, 0, 0, 0, 0, 0)], 30)[0]["snapshots_beyond"] is None
