"""Trigger evaluations: bands, hysteresis, calendar, market signals, risk budget, coalescing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from rebalancer.domain.calendar import BusinessCalendar, Frequency, Schedule
from rebalancer.domain.drift import CovarianceModel, SleeveHoldings, account_drift
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import CASH, Instrument, Sleeve
from rebalancer.domain.rules import parse_definition
from rebalancer.domain.triggers import (
    AlertPolicy,
    Band,
    Severity,
    Suppression,
    TriggerKind,
    coalesce,
    correlation_distance,
    evaluate_bands,
    evaluate_calendar,
    evaluate_correlation_change,
    evaluate_market_condition,
    evaluate_risk_budget,
    evaluate_rule_trigger,
    evaluate_volatility_regime,
    gate,
    manual_trigger,
    next_severity,
)

INSTRUMENTS = {
    "AAPL": Instrument("AAPL", sector="technology"),
    "MSFT": Instrument("MSFT", sector="technology"),
    "AGG": Instrument("AGG", asset_class="fixed_income", sector="bonds"),
}
REPORT = account_drift(
    "acc",
    {"AAPL": 0.33, "MSFT": 0.30, "AGG": 0.35, CASH: 0.02},
    {"AAPL": 0.30, "MSFT": 0.30, "AGG": 0.38, CASH: 0.02},
    INSTRUMENTS,
)
NY = ZoneInfo("America/New_York")


def test_bands_absolute_relative_and_account() -> None:
    evs = evaluate_bands(
        REPORT,
        [
            Band("instrument", absolute=0.025),
            Band("sector", absolute=0.05),
            Band("instrument", relative=0.09, key="AAPL"),
            Band("account", absolute=0.03, metric="turnover"),
        ],
    )
    assert [e.fired for e in evs] == [True, False, True, True]
    assert set(evs[0].inputs["breaches"]) == {"AAPL", "AGG"}
    assert "AAPL +0.0300" in evs[0].reason
    assert evs[2].inputs["breaches"]["AAPL"]["relative"] == pytest.approx(0.1)
    assert evs[3].inputs["value"] == pytest.approx(0.03)  # (0.03 + 0.03) / 2
    assert all(e.kind == TriggerKind.THRESHOLD for e in evs)
    json.dumps([e.to_dict() for e in evs])
    with pytest.raises(InvalidInput) as e:
        evaluate_bands(REPORT, [Band("sleeve", absolute=0.1)])
    assert e.value.fields == ["bands[0].level"]
    with pytest.raises(InvalidInput):
        evaluate_bands(REPORT, [Band("account", absolute=0.1, metric="foo")])


def test_hysteresis_no_alert_storm() -> None:
    policy = AlertPolicy(warning=0.05, critical=0.10, hysteresis=0.2)
    s = Severity.NONE
    path = []
    for v in [0.049, 0.05, 0.045, 0.051, 0.041, 0.0401, 0.0399, 0.05]:
        change = next_severity(policy, v, s)
        path.append(change.current)
        s = change.current
    W, N = Severity.WARNING, Severity.NONE
    assert path == [N, W, W, W, W, W, N, W]  # clears only below 0.05 * 0.8 = 0.04
    c = next_severity(policy, -0.12, Severity.NONE)
    assert c.current == Severity.CRITICAL and c.raised and c.changed
    assert next_severity(policy, 0.085, Severity.CRITICAL).current == Severity.CRITICAL
    assert next_severity(policy, 0.07, Severity.CRITICAL).current == Severity.WARNING
    assert next_severity(policy, 0.01, Severity.CRITICAL).current == Severity.NONE


def test_calendar_trigger_fires_once_per_period() -> None:
    s = Schedule("monthly", Frequency.MONTHLY, at=time(10), calendar=BusinessCalendar())
    now = datetime(2024, 3, 29, 11, tzinfo=NY)
    first = evaluate_calendar(s, now, None)
    assert first.fired and first.key == "M:2024-03"
    again = evaluate_calendar(s, now + timedelta(hours=1), first.key)
    assert not again.fired and "already fired" in again.reason
    json.dumps(again.to_dict())


def test_manual_trigger() -> None:
    ev = manual_trigger("alice", "client call", "idem-1")
    assert ev.fired and ev.key == "idem-1" and ev.priority == 100


def test_volatility_regime() -> None:
    rng = np.random.default_rng(3)
    calm = rng.normal(0, 0.005, 250)
    stormy = rng.normal(0, 0.03, 20)
    prices = 100 * np.exp(np.cumsum(np.concatenate([calm, stormy])))
    ev = evaluate_volatility_regime(
        np.concatenate([[100.0], prices]), short_window=20, long_window=250
    )
    assert ev.fired and ev.inputs["ratio"] > 1.5
    quiet = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    assert not evaluate_volatility_regime(quiet).fired
    short = evaluate_volatility_regime(quiet[:50])
    assert not short.fired and short.reason == "insufficient price history"
    with pytest.raises(InvalidInput):
        evaluate_volatility_regime(np.array([1.0, -1.0]))


def test_correlation_change() -> None:
    rng = np.random.default_rng(4)
    common = rng.normal(0, 0.01, 100)
    r = np.column_stack([common + rng.normal(0, 0.001, 100), common + rng.normal(0, 0.001, 100)])
    prices = 100 * np.exp(np.cumsum(r, axis=0))
    ev = evaluate_correlation_change(prices, np.eye(2), window=60, threshold=0.5)
    assert ev.fired and ev.inputs["distance"] > 0.9
    same = evaluate_correlation_change(prices, np.array([[1, 0.99], [0.99, 1]]), threshold=0.5)
    assert not same.fired
    assert correlation_distance(np.eye(3), np.eye(3)) == 0.0


def test_market_condition() -> None:
    ev = evaluate_market_condition(np.array([100.0, 120.0, 105.0]), drawdown_threshold=0.10)
    assert ev.fired and ev.inputs["drawdown"] == pytest.approx(0.125)
    calm = evaluate_market_condition(np.array([100.0, 101.0]), vol_index=35, vol_index_threshold=30)
    assert calm.fired and "volatility index" in calm.reason
    assert not evaluate_market_condition(np.array([100.0, 99.0])).fired


def test_risk_budget() -> None:
    cov = CovarianceModel(("AAPL", "MSFT", "AGG"), np.diag([0.04, 0.04, 0.0025]))
    w = {"AAPL": 0.3, "MSFT": 0.3, "AGG": 0.4}
    # variance 0.09*0.04*2 + 0.16*0.0025 = 0.0076 -> vol 0.0872
    ev = evaluate_risk_budget(w, cov, vol_budget=0.08)
    assert ev.fired and ev.inputs["ex_ante_vol"] == pytest.approx(0.0076**0.5)
    assert not evaluate_risk_budget(w, cov, vol_budget=0.09).fired
    te = evaluate_risk_budget(
        w, cov, targets={"AAPL": 0.2, "MSFT": 0.3, "AGG": 0.5}, te_budget=0.01
    )
    assert te.fired and te.inputs["tracking_error"] == pytest.approx(
        (0.01 * 0.04 + 0.01 * 0.0025) ** 0.5
    )
    sleeves = [
        SleeveHoldings(Sleeve("eq", "m1", 0.6), {}, {"AAPL": 0.3, "MSFT": 0.3}),
        SleeveHoldings(Sleeve("fi", "m2", 0.4), {}, {"AGG": 0.4}),
    ]
    rc = evaluate_risk_budget(w, cov, sleeves=sleeves, contribution_tolerance=0.1)
    # equity sleeve: 0.0072 / 0.0076 = 94.7 % of variance > 60 % * 1.1
    assert rc.fired and rc.inputs["sleeve_contributions"]["eq"] == pytest.approx(0.0072 / 0.0076)


def test_rule_trigger() -> None:
    d = parse_definition(
        {"name": "big-drift", "priority": 65, "rule": {"signal": "drift", "op": ">", "value": 0.05}}
    )
    ev = evaluate_rule_trigger(d, {"drift": 0.06})
    assert ev.fired and ev.priority == 65 and ev.key == "big-drift" and ev.kind == TriggerKind.RULE


def test_coalescing_and_gates() -> None:
    evs = [
        *evaluate_bands(REPORT, [Band("instrument", absolute=0.025), Band("sector", absolute=0.5)]),
        manual_trigger("bob", "", "k"),
        evaluate_market_condition(np.array([100.0, 80.0])),
        evaluate_market_condition(np.array([100.0, 80.0])),  # same reason twice
    ]
    req = coalesce("acc", evs)
    assert req is not None
    assert req.priority == 100
    assert req.kinds == (TriggerKind.MANUAL, TriggerKind.MARKET_CONDITION, TriggerKind.THRESHOLD)
    assert len(req.reasons) == 3 and len(req.evaluations) == 4
    assert (
        coalesce("acc", [e for e in evs if e.kind == TriggerKind.THRESHOLD and not e.fired]) is None
    )
    json.dumps(req.to_dict())

    now = datetime(2024, 3, 28, 15, tzinfo=UTC)
    ok = gate(req, now=now, market_open=True, open_orders=0)
    assert ok.allowed and ok.reasons == ()
    blocked = gate(
        req,
        now=now,
        market_open=False,
        open_orders=2,
        last_rebalance_at=now - timedelta(hours=1),
        cooldown=timedelta(days=1),
        manual_bypasses_cooldown=False,
    )
    assert not blocked.allowed
    assert blocked.suppressed_by == (
        Suppression.COOLDOWN,
        Suppression.MARKET_CLOSED,
        Suppression.OPEN_ORDERS,
    )
    assert "2 orders still open" in blocked.reasons
    manual = gate(
        req,
        now=now,
        market_open=True,
        open_orders=0,
        last_rebalance_at=now - timedelta(hours=1),
        cooldown=timedelta(days=1),
    )
    assert manual.allowed
    auto = coalesce("acc", [e for e in evs if e.kind != TriggerKind.MANUAL])
    assert auto is not None
    cool = gate(
        auto,
        now=now,
        market_open=True,
        open_orders=0,
        last_rebalance_at=now - timedelta(hours=1),
        cooldown=timedelta(days=1),
    )
    assert cool.suppressed_by == (Suppression.COOLDOWN,)
