"""Hypothesis properties and agreement with a plain CVXPY formulation."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opt_factory import AS_OF, random_request

from rebalancer.domain.errors import InfeasibleRebalance
from rebalancer.optimizer import Decision, Recommender, Side
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

REC = Recommender()
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def _independent_check(req: AnalyzeRequest, out: AnalyzeResponse) -> None:
    """Re-derive every trading constraint from the response alone (no optimizer code)."""
    pol = req.policy
    price = {i.id: i.price for i in req.instruments}
    adv = {i.id: i.adv_shares for i in req.instruments}
    lots = {lt.lot_id: lt for lt in req.portfolio.lots}
    nav = req.portfolio.cash + sum(lt.quantity * price[lt.instrument] for lt in lots.values())
    assert out.nav == pytest.approx(nav)
    cash = req.portfolio.cash
    turnover = 0.0
    for t in out.trades:
        value = t.quantity * price[t.instrument]
        turnover += value
        assert value <= pol.max_adv_fraction * adv[t.instrument] * price[t.instrument] + 1e-6
        size = next(i.lot_size for i in req.instruments if i.id == t.instrument)
        if t.side is Side.BUY:
            cash -= value
            assert t.quantity % size == 0
            assert t.instrument not in pol.no_buy
        else:
            cash += value
            assert t.instrument not in pol.no_sell
            assert sum(ls.quantity for ls in t.lots) == pytest.approx(t.quantity)
            for ls in t.lots:
                assert ls.lot_id in lots and ls.quantity <= lots[ls.lot_id].quantity + 1e-9
    assert cash >= pol.min_cash_weight * nav - 1e-6
    assert out.cash_after == pytest.approx(cash)
    if pol.max_turnover is not None:
        assert turnover <= pol.max_turnover * nav + 1e-6
    if pol.max_var is not None:
        assert out.risk.var_after <= pol.max_var + 1e-9
    assert all(c.slack >= -1e-9 * max(1.0, abs(c.limit)) for c in out.constraints)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    min_cash=st.sampled_from([0.0, 0.05, 0.2]),
    turnover=st.sampled_from([None, 0.1, 0.4]),
    lot_size=st.sampled_from([1, 10]),
)
def test_no_answer_violates_a_constraint_after_rounding(seed, min_cash, turnover, lot_size) -> None:
    req = random_request(
        seed, min_cash_weight=min_cash, max_turnover=turnover, max_adv_fraction=0.05
    )
    req = req.model_copy(
        update={
            "instruments": [i.model_copy(update={"lot_size": lot_size}) for i in req.instruments]
        }
    )
    try:
        out = REC.analyze(req)
    except InfeasibleRebalance as err:
        assert err.fields
        return
    _independent_check(req, out)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_zero_drift_and_no_losses_gives_no_trade(seed) -> None:
    req = random_request(seed, gains_only=True)
    price = {i.id: i.price for i in req.instruments}
    qty: dict[str, float] = {}
    for lt in req.portfolio.lots:
        qty[lt.instrument] = qty.get(lt.instrument, 0.0) + lt.quantity
    nav = req.portfolio.cash + sum(q * price[i] for i, q in qty.items())
    targets = {i: q * price[i] / nav for i, q in qty.items()}
    targets["CASH"] = 1.0 - sum(targets.values())
    out = REC.analyze(req.model_copy(update={"targets": targets}))
    assert out.decision is Decision.NO_TRADE and out.trades == []


@SETTINGS
@given(seed=st.integers(0, 10_000), extra_bps=st.sampled_from([5.0, 25.0, 100.0]))
def test_adding_a_cost_never_increases_turnover(seed, extra_bps) -> None:
    # A uniform commission adds lambda * turnover to a convex objective, so turnover cannot
    # rise. Gains only: wash-sale group choices (combinatorial) are outside this property.
    base = random_request(seed, gains_only=True)
    costly = base.model_copy(
        update={"policy": base.policy.model_copy(update={"commission_bps": extra_bps})}
    )
    t0 = sum(t.value for t in REC.analyze(base).trades)
    t1 = sum(t.value for t in REC.analyze(costly).trades)
    slack = sum(i.price * i.lot_size for i in base.instruments)  # one rounding step each
    assert t1 <= t0 + slack


def plain_objective(req: AnalyzeRequest) -> float:
    """The issue's formulation written directly: dense Sigma, per-lot fractions, |z|."""
    pol = req.policy
    ids = [i.id for i in req.instruments]
    n = len(ids)
    p = np.array([i.price for i in req.instruments])
    lots = req.portfolio.lots
    L = len(lots)
    nav = req.portfolio.cash + float(sum(lt.quantity * p[ids.index(lt.instrument)] for lt in lots))
    A = np.zeros((n, L))
    tax = np.zeros(L)
    for m, lt in enumerate(lots):
        i = ids.index(lt.instrument)
        A[i, m] = lt.quantity * p[i] / nav
        long = (AS_OF - lt.acquired).days > pol.long_term_days
        rate = pol.long_term_rate if long else pol.short_term_rate
        tax[m] = rate * lt.quantity * (p[i] - lt.cost_basis) / nav
    w = A @ np.ones(L)
    wt = np.array([req.targets.get(i, 0.0) for i in ids])
    rm = req.risk_model
    B = np.array(rm.factor_exposures)
    sigma = B @ np.array(rm.factor_covariance) @ B.T + np.diag(rm.specific_variance)
    adv_val = np.array([i.adv_shares for i in req.instruments]) * p
    spread = (np.array([i.half_spread_bps for i in req.instruments]) + pol.commission_bps) / 1e4
    vol = np.array([i.daily_volatility for i in req.instruments])
    imp = pol.impact_coefficient * vol * np.sqrt(nav / adv_val)
    b = cp.Variable(n, nonneg=True)
    s = cp.Variable(L)
    z = b - A @ s
    f = (
        pol.risk_aversion * cp.quad_form(w + z - wt, cp.psd_wrap(sigma))
        + spread @ cp.abs(z)
        + imp @ cp.power(cp.abs(z), 1.5)
        + tax @ s
    )
    cons = [
        s >= 0,
        s <= 1,
        req.portfolio.cash / nav - cp.sum(z) >= pol.min_cash_weight,
        cp.abs(z) <= pol.max_adv_fraction * adv_val / nav,
    ]
    if pol.max_turnover is not None:
        cons.append(cp.sum(cp.abs(z)) <= pol.max_turnover)
    prob = cp.Problem(cp.Minimize(1e4 * f), cons)
    prob.solve(solver=cp.CLARABEL)
    return float(prob.value) / 1e4


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_plain_cvxpy_formulation(seed) -> None:
    turnover = [None, 0.3][seed % 2]
    req = random_request(
        seed, n=5, gains_only=True, min_cash_weight=0.02, max_turnover=turnover, lt_wait_days=0
    )
    ours = REC.relaxed_objective(req)
    theirs = plain_objective(req)
    assert ours == pytest.approx(theirs, rel=1e-3, abs=1e-7)
