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
