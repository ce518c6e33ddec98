"""Drift at every level: hand-calculated examples, book vectorisation and properties."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.domain.drift import (
    CovarianceModel,
    FactorModel,
    SleeveHoldings,
    account_drift,
    book_drift,
    days_to_breach,
    drift_trend,
    group_matrix,
    trend_slopes,
)
from rebalancer.domain.errors import InvalidInput, UnknownInstrument
from rebalancer.domain.model import CASH, Instrument, Sleeve

INSTRUMENTS = {
    "AAPL": Instrument("AAPL", asset_class="equity", sector="technology"),
    "MSFT": Instrument("MSFT", asset_class="equity", sector="technology"),
    "XOM": Instrument("XOM", asset_class="equity", sector="energy"),
    "AGG": Instrument("AGG", asset_class="fixed_income", sector="bonds"),
}
WEIGHTS = {"AAPL": 0.30, "MSFT": 0.15, "XOM": 0.05, "AGG": 0.45, CASH: 0.05}
TARGETS = {"AAPL": 0.25, "MSFT": 0.15, "XOM": 0.10, "AGG": 0.48, CASH: 0.02}


def test_instrument_level_by_hand() -> None:
    r = account_drift("acc-1", WEIGHTS, TARGETS, INSTRUMENTS)
    inst = r.levels["instrument"]
    assert inst["AAPL"].absolute == pytest.approx(0.05)
    assert inst["AAPL"].relative == pytest.approx(0.20)  # 0.05 / 0.25
    assert inst["XOM"].absolute == pytest.approx(-0.05)
    assert inst["XOM"].relative == pytest.approx(-0.5)
    assert inst["MSFT"].absolute == pytest.approx(0.0)
    assert inst["CASH"].absolute == pytest.approx(0.03)
    # |0.05| + 0 + |-0.05| + |-0.03| + |0.03| = 0.16, one-way turnover 0.08
    assert r.account.sum_abs == pytest.approx(0.16)
    assert r.account.turnover == pytest.approx(0.08)
    assert r.account.max_abs == pytest.approx(0.05)
    assert r.account.max_key in {"AAPL", "XOM"}
    assert r.tracking_error is None


def test_sector_and_asset_class_by_hand() -> None:
    r = account_drift("acc-1", WEIGHTS, TARGETS, INSTRUMENTS)
    sec = r.levels["sector"]
    # technology 0.45 vs 0.40; energy 0.05 vs 0.10; bonds 0.45 vs 0.48; cash 0.05 vs 0.02
    assert sec["technology"].absolute == pytest.approx(0.05)
    assert sec["technology"].relative == pytest.approx(0.125)
    assert sec["energy"].absolute == pytest.approx(-0.05)
    assert sec["bonds"].absolute == pytest.approx(-0.03)
    assert sec["cash"].absolute == pytest.approx(0.03)
    assert r.summaries["sector"].sum_abs == pytest.approx(0.16)
    ac = r.levels["asset_class"]
    # equity 0.50 vs 0.50 -> 0; fixed_income -0.03; cash +0.03
    assert ac["equity"].absolute == pytest.approx(0.0, abs=1e-12)
    assert ac["fixed_income"].absolute == pytest.approx(-0.03)
    assert r.summaries["asset_class"].sum_abs == pytest.approx(0.06)
    assert r.summaries["asset_class"].turnover == pytest.approx(0.03)


def test_relative_drift_is_none_without_target() -> None:
    weights = {"AAPL": 0.5, "XOM": 0.1, CASH: 0.4}
    targets = {"AAPL": 0.5, CASH: 0.5}
    r = account_drift("a", weights, targets, INSTRUMENTS)
    assert r.levels["instrument"]["XOM"].relative is None
    assert r.levels["instrument"]["XOM"].absolute == pytest.approx(0.1)


def test_sleeve_level_by_hand() -> None:
    growth = Sleeve("growth", "m-growth", share=0.6)
    income = Sleeve("income", "m-income", share=0.4)
    sleeves = [
        SleeveHoldings(growth, {"AAPL": 0.5, "MSFT": 0.5}, {"AAPL": 0.35, "MSFT": 0.30}),
        SleeveHoldings(income, {"AGG": 0.9, CASH: 0.1}, {"AGG": 0.30, CASH: 0.05}),
    ]
    weights = {"AAPL": 0.35, "MSFT": 0.30, "AGG": 0.30, CASH: 0.05}
    targets = {"AAPL": 0.30, "MSFT": 0.30, "AGG": 0.36, CASH: 0.04}
    r = account_drift("a", weights, targets, INSTRUMENTS, sleeves=sleeves)
    sl = r.levels["sleeve"]
    assert sl["growth"].weight == pytest.approx(0.65)
    assert sl["growth"].absolute == pytest.approx(0.05)
    assert sl["income"].absolute == pytest.approx(-0.05)
    assert sl["income"].relative == pytest.approx(-0.125)
    # growth holds AAPL 0.35 vs 0.30, MSFT 0.30 vs 0.30 -> sum 0.05
    assert r.sleeve_internal["growth"].sum_abs == pytest.approx(0.05)
    # income AGG 0.30 vs 0.36, cash 0.05 vs 0.04 -> 0.07
    assert r.sleeve_internal["income"].sum_abs == pytest.approx(0.07)


def test_tracking_error_dense_and_factor_agree() -> None:
    names = ("AAPL", "MSFT", "XOM", "AGG")
    B = np.array([[1.0, 0.2], [0.9, 0.1], [0.8, 0.5], [0.1, 0.0]])
    F = np.array([[0.04, 0.01], [0.01, 0.02]])
    d = np.array([0.02, 0.015, 0.03, 0.002])
    dense = CovarianceModel(names, B @ F @ B.T + np.diag(d))
    factor = FactorModel(names, B, F, d)
    a = np.array([WEIGHTS[k] - TARGETS[k] for k in names])
    expected = math.sqrt(a @ dense.cov @ a)  # cash is riskless
    r1 = account_drift("a", WEIGHTS, TARGETS, INSTRUMENTS, risk_model=dense)
    r2 = account_drift("a", WEIGHTS, TARGETS, INSTRUMENTS, risk_model=factor)
    assert r1.tracking_error == pytest.approx(expected)
    assert r2.tracking_error == pytest.approx(expected)


def test_diagonal_tracking_error_by_hand() -> None:
    cov = CovarianceModel(("AAPL", "MSFT", "XOM", "AGG"), np.diag([0.04, 0.04, 0.09, 0.01]))
    r = account_drift("a", WEIGHTS, TARGETS, INSTRUMENTS, risk_model=cov)
    # 0.05^2*0.04 + 0.05^2*0.09 + 0.03^2*0.01 = 0.0001 + 0.000225 + 0.000009
    assert r.tracking_error == pytest.approx(math.sqrt(0.000334))


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as e:
        account_drift("a", {"AAPL": 0.5}, TARGETS, INSTRUMENTS)
    assert e.value.fields == ["weights"]
    with pytest.raises(UnknownInstrument) as u:
        account_drift("a", {"ZZZ": 1.0}, {CASH: 1.0}, INSTRUMENTS)
    assert u.value.fields == ["weights.ZZZ"]
    cov = CovarianceModel(("AAPL",), np.eye(1))
    with pytest.raises(UnknownInstrument):
        account_drift("a", WEIGHTS, TARGETS, INSTRUMENTS, risk_model=cov)


def test_to_dict_is_json_ready() -> None:
    import json

    r = account_drift("a", WEIGHTS, TARGETS, INSTRUMENTS, as_of=date(2024, 3, 1))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["as_of"] == "2024-03-01"
    assert d["levels"]["instrument"]["AAPL"]["absolute"] == pytest.approx(0.05)
    assert d["summaries"]["instrument"]["turnover"] == pytest.approx(0.08)


def test_book_matches_single_account() -> None:
    names = ["AAPL", "MSFT", "XOM", "AGG", CASH]
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(5), size=20)
    T = np.array([TARGETS[k] for k in names])
    sectors = [INSTRUMENTS[k].sector if k != CASH else "cash" for k in names]
    cov = CovarianceModel(tuple(names[:4]), np.diag([0.04, 0.04, 0.09, 0.01]))
    book = book_drift(W, T, names, groups={"sector": group_matrix(sectors)}, risk_model=cov)
    for i in (0, 7, 19):
        w = dict(zip(names, W[i].tolist(), strict=True))
        r = account_drift("a", w, TARGETS, INSTRUMENTS, risk_model=cov)
        assert book.sum_abs[i] == pytest.approx(r.account.sum_abs)
        assert book.max_abs[i] == pytest.approx(r.account.max_abs)
        assert book.tracking_error is not None
        assert book.tracking_error[i] == pytest.approx(r.tracking_error)
        lvl = book.levels["sector"]
        assert lvl.sum_abs[i] == pytest.approx(r.summaries["sector"].sum_abs)
        for k, g in enumerate(lvl.groups):
            assert lvl.active[i, k] == pytest.approx(r.levels["sector"][g].absolute)
    mask = book.breached(max_abs=0.2, turnover=10.0)
    assert mask.tolist() == (book.max_abs >= 0.2).tolist()
    rel = book.relative(T)
    assert rel[0, 0] == pytest.approx(book.active[0, 0] / 0.25)


def test_book_10000_by_50_is_fast() -> None:
    import time

    m, n, k = 10_000, 50, 5
    rng = np.random.default_rng(1)
    W = rng.dirichlet(np.ones(n), size=m)
    T = rng.dirichlet(np.ones(n))
    names = [f"I{j}" for j in range(n - 1)] + [CASH]
    fm = FactorModel(
        tuple(names[:-1]), rng.normal(size=(n - 1, k)), np.eye(k) * 0.01, np.full(n - 1, 0.01)
    )
    groups = {"sector": group_matrix([f"S{j % 7}" for j in range(n)])}
    start = time.perf_counter()
    book = book_drift(W, T, names, groups=groups, risk_model=fm)
    elapsed = time.perf_counter() - start
    assert book.sum_abs.shape == (m,)
    assert elapsed < 1.0


def test_trend_slope_ewma_and_breach() -> None:
    d0 = date(2024, 1, 1)
    snaps = [(d0 + timedelta(days=i), 0.01 + 0.002 * i) for i in range(6)]
    t = drift_trend(snaps, half_life_days=1.0, band=0.03)
    assert t.slope_per_day == pytest.approx(0.002)
    assert t.last == pytest.approx(0.02)
    assert t.days_to_breach == pytest.approx(5.0)  # (0.03 - 0.02) / 0.002
    # EWMA with half-life 1 day and daily steps: alpha = 0.5 each step
    e = 0.01
    for i in range(1, 6):
        e += 0.5 * (0.01 + 0.002 * i - e)
    assert t.ewma == pytest.approx(e)
    assert days_to_breach(-0.01, -0.002, 0.03) == pytest.approx(10.0)
    assert days_to_breach(0.01, 0.0, 0.03) is None
    assert days_to_breach(0.05, -1.0, 0.03) == 0.0
    slopes = trend_slopes(np.array([0.0, 1.0, 2.0]), np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]))
    assert slopes.tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(InvalidInput):
        drift_trend([])


weight_vectors = st.lists(st.integers(0, 1000), min_size=5, max_size=5).filter(lambda v: sum(v) > 0)


def _normalise(v: list[int]) -> dict[str, float]:
    names = ["AAPL", "MSFT", "XOM", "AGG", CASH]
    total = sum(v)
    return {k: x / total for k, x in zip(names, v, strict=True)}


@settings(max_examples=150, deadline=None)
@given(weight_vectors, weight_vectors)
def test_drift_zero_exactly_when_on_target(a: list[int], b: list[int]) -> None:
    w, t = _normalise(a), _normalise(b)
    r = account_drift("a", w, t, INSTRUMENTS)
    on_target = all(w[k] == t[k] for k in w)
    assert (r.account.sum_abs == 0.0) == on_target
    assert (r.account.max_abs == 0.0) == on_target
    # weights sum to 1 and active weights sum to 0 at every level
    for lvl in ("instrument", "sector", "asset_class"):
        entries = r.levels[lvl].values()
        assert math.fsum(e.weight for e in entries) == pytest.approx(1.0)
        assert math.fsum(e.absolute for e in entries) == pytest.approx(0.0, abs=1e-12)
        # aggregation never increases the total absolute deviation
        assert r.summaries[lvl].sum_abs <= r.account.sum_abs + 1e-12
    r_self = account_drift("a", w, w, INSTRUMENTS)
    assert r_self.account.sum_abs == 0.0
