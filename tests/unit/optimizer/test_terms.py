"""Hand-checkable values of each objective term and constraint group, in NumPy and CVXPY."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
from opt_factory import diag_cov, inst, lot, request

from rebalancer.optimizer.data import build_data
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.terms.base import TradeVec


def _setup():
    # NAV = 10,000 cash + 100 A x 100 + 0 B = 20,000
    req = request(
        cash=10_000,
        lots=[lot("a1", "A", 60, 80.0), lot("a2", "A", 40, 120.0, days_ago=100)],
        targets={"A": 0.25, "B": 0.25, "CASH": 0.5},
        instruments=[inst("A", adv_shares=1000, half_spread_bps=10), inst("B", adv_shares=1000)],
        risk_model=diag_cov(["A", "B"], 0.04),
        policy={
            "risk_aversion": 2.0,
            "commission_bps": 5,
            "impact_coefficient": 1.0,
            "short_term_rate": 0.4,
            "long_term_rate": 0.2,
            "min_cash_weight": 0.1,
            "max_turnover": 0.3,
            "max_adv_fraction": 0.1,
        },
    )
    data = build_data(req)
    prob = CompiledProblem(data.shape)
    prob.update(data)
    return data, prob


def _trade(data, buy_b: float, sell_a1: float, sell_a2: float) -> TradeVec:
    lots = np.zeros_like(data.lot_w)
    lots[0, 0], lots[0, 1] = sell_a1, sell_a2
    return TradeVec(np.array([0.0, buy_b]), lots)


def test_data_weights_and_lots() -> None:
    data, _ = _setup()
    assert data.nav == pytest.approx(20_000)
    assert data.w == pytest.approx([0.5, 0.0])
    assert data.lot_w[0] == pytest.approx([0.3, 0.2])
    assert data.lot_long[0].tolist() == [True, False]
    # tax per unit of weight sold = rate * (price - basis) / price
    assert data.lot_tax[0] == pytest.approx([0.2 * 0.2, 0.4 * -0.2])


def test_each_cost_term_by_hand() -> None:
    data, prob = _setup()
    t = _trade(data, 0.1, 0.05, 0.05)  # sell 10% of NAV of A, buy 10% of B
    parts = prob.parts(data, t)
    # tracking: gamma * 0.04 * ((0.4 - 0.25)^2 + (0.1 - 0.25)^2)
    assert parts["tracking"] == pytest.approx(2.0 * 0.04 * (0.15**2 + 0.15**2))
    # spread+fees: A (10+5) bps on 0.1, B (5+5) bps on 0.1
    assert parts["spread_and_fees"] == pytest.approx(0.0015 * 0.1 + 0.0010 * 0.1)
    # impact: 1.0 * 0.02 * 0.1^1.5 * sqrt(20000 / (1000 * 100)) for each of A and B
    one = 0.02 * 0.1**1.5 * math.sqrt(20_000 / 100_000)
    assert parts["impact"] == pytest.approx(2 * one)
    # tax: lot a1 gain 20/share LT 0.2, lot a2 loss 20/share ST 0.4 (each 0.05 of NAV = 10 shares)
    assert parts["tax"] * data.nav == pytest.approx(0.2 * 20 * 10 + 0.4 * -20 * 10)


def test_cvxpy_objective_matches_numpy_on_fixed_trade() -> None:
    data, prob = _setup()
    t = _trade(data, 0.07, 0.02, 0.06)
    prob.vars.buy.value = t.buy
    prob.vars.lot_sell.value = t.lot_sell
    prob.vars.sell.value = t.sell
    prob.risk.u.value = prob.risk.load.value.T @ (data.w + t.z - data.target)
    prob.risk.v.value = prob.risk.sd.value * (data.w + t.z - data.target)
    expr_value = sum(float(c.expr.value) for c in prob.costs)
    assert expr_value == pytest.approx(prob.objective(data, t), rel=1e-10)


def _check(prob, data, t, name):
    return [c for c in prob.checks(data, t) if c.name is name]


def test_cash_floor_turnover_adv_by_hand() -> None:
    data, prob = _setup()
    t = _trade(data, 0.45, 0.0, 0.0)  # buy 9,000 of B: cash 0.05 < 0.1 floor
    (cash,) = _check(prob, data, t, ConstraintName.CASH_FLOOR)
    assert cash.value == pytest.approx(0.05) and cash.limit == pytest.approx(0.1)
    assert not cash.holds()
    (turn,) = _check(prob, data, t, ConstraintName.TURNOVER)
    assert turn.value == pytest.approx(0.45) and not turn.holds()
    # ADV cap: 0.1 * 1000 shares * 100 / 20000 = 0.5 of NAV
    (adv,) = _check(prob, data, t, ConstraintName.ADV_CAP)
    assert adv.limit == pytest.approx(0.5) and adv.holds()
    ok = _trade(data, 0.1, 0.05, 0.05)
    assert all(c.holds() for c in prob.checks(data, ok))


def test_lot_bounds_and_long_only() -> None:
    data, prob = _setup()
    t = _trade(data, 0.0, 0.31, 0.0)  # more than the 0.3 weight lot a1 holds
    (bound,) = _check(prob, data, t, ConstraintName.LOT_SELL_ALLOWED)
    assert bound.subject == "a1" and not bound.holds()


def test_clearly_holds_is_true_only_when_every_check_holds() -> None:
    """``clearly_holds`` (no checks built) never says True where a check fails, including at
    the tolerance's edge, for NaN and for a sale in an empty lot slot; on a trade whose
    checks all hold it says True."""
    data, prob = _setup()
    lim = data.buy_ub[1]
    tol = 1e-9 * max(1.0, lim)
    trades = [
        _trade(data, 0.1, 0.05, 0.05),
        _trade(data, 0.45, 0.0, 0.0),
        _trade(data, 0.0, 0.31, 0.0),
        _trade(data, lim + tol, 0.0, 0.0),
        _trade(data, lim + 2 * tol, 0.0, 0.0),
        _trade(data, np.nan, 0.05, 0.0),
        _trade(data, 0.0, 0.0, np.nan),
    ]
    empty = _trade(data, 0.0, 0.0, 0.0)
    empty.lot_sell[1, 0] = 0.01  # instrument B holds no lot
    trades.append(empty)
    for t in trades:
        for term in prob.limits:
            every = all(c.holds() for c in term.check(data, t))
            assert not term.clearly_holds(data, t) or every, (term.name, t)
    for term in prob.limits:
        assert term.clearly_holds(data, trades[0]), term.name


def test_each_constraint_is_enforced_by_the_solver() -> None:
    data, prob = _setup()
    prob.update(data)
    res = prob.solve(data, tuple(prob_chain()))
    assert res.trade is not None
    assert all(c.holds(1e-7) for c in prob.checks(data, res.trade))
    assert res.value == pytest.approx(prob.objective(data, res.trade), rel=1e-5, abs=1e-9)


def prob_chain():
    from rebalancer.optimizer.enums import SolverName

    return [SolverName.CLARABEL]


def test_problem_is_dpp_and_parameters_are_declared_once() -> None:
    _, prob = _setup()
    assert prob.problem.is_dpp()
    names = [p.name() for p in prob.problem.parameters()]
    assert len(names) == len(set(names))
    assert all(isinstance(p, cp.Parameter) for p in prob.problem.parameters())


def test_set_param_checks_shape_and_sign_as_the_array_test() -> None:
    from rebalancer.optimizer.terms.base import set_param

    scalar, vec = cp.Parameter(nonneg=True, name="s"), cp.Parameter(3, nonneg=True, name="v")
    free = cp.Parameter(3, name="f")
    for bad in (-1e-300, float("nan")):
        with pytest.raises(ValueError, match="must be >= 0"):
            set_param(scalar, bad)
        with pytest.raises(ValueError, match="must be >= 0"):
            set_param(vec, np.array([1.0, bad, 2.0]))
    with pytest.raises(ValueError, match="needs shape"):
        set_param(vec, np.zeros(4))
    set_param(scalar, 0.0)
    set_param(vec, np.array([0.0, -0.0, 5.0]))  # -0.0 >= 0 in both tests
    set_param(free, np.array([-1.0, float("nan"), 2.0]))  # no sign check without nonneg
    assert scalar.value == 0.0 and vec.value.tolist() == [0.0, 0.0, 5.0]
    assert np.isnan(free.value[1])


def _plain_update_values(data) -> dict[str, np.ndarray]:
    """The derived parameters as the plain path computes them (no memo)."""
    active = data.w - data.target
    return {
        "active_factor0": data.factor_load.T @ active,
        "active_specific0": data.specific_sd * active,
        "target_factor": data.factor_load.T @ data.target,
        "target_specific": data.specific_sd * data.target,
    }


def test_memoized_update_gives_the_plain_values_and_follows_new_arrays() -> None:
    import dataclasses

    data, prob = _setup()
    params = {p.name(): p for p in prob.problem.parameters()}
    for _ in range(2):  # the second update of the same request reuses the products
        prob.update(data)
        for name, want in _plain_update_values(data).items():
            assert np.array_equal(params[name].value, want), name
    other = dataclasses.replace(data, w=data.w * 0.5, target=data.target[::-1].copy())
    prob.update(other)
    for name, want in _plain_update_values(other).items():
        assert np.array_equal(params[name].value, want), name


def _plain_vector(values, limits, lower):
    """The per-entity checks with every limit's tolerance computed (no shortcut): the
    violators, else the tightest entry; and whether all hold."""
    lim = np.zeros_like(values) if limits is None else limits
    slack = values - lim if lower else lim - values
    neg_tol = -1e-9 * np.maximum(1.0, np.abs(lim))
    bad = slack < neg_tol
    idx = bad.nonzero()[0] if bad.any() else [int(slack.argmin())]
    return [(str(k), repr(float(values[k])), float(lim[k])) for k in idx], bool(
        (slack >= neg_tol).all()
    )


def test_vector_checks_shortcut_matches_the_plain_checks() -> None:
    from rebalancer.optimizer.terms.constraints import _vector, _vector_holds

    rng = np.random.default_rng(7)
    for case in range(400):
        n = int(rng.integers(1, 8))
        limits = rng.choice([0.0, 0.5, 3.0, 1e4, -2.0], n) if case % 5 else None
        lim = np.zeros(n) if limits is None else limits
        # entries on and around each limit's tolerance, and a few plainly broken or NaN
        off = rng.choice([0.0, 1e-12, 5e-10, 9.9e-10, 1e-9, 1.1e-9, 2e-9, 5e-6, 1e-3], n)
        values = lim + off * rng.choice([-1.0, 1.0], n) * np.maximum(1.0, np.abs(lim))
        if case % 7 == 0:
            values[int(rng.integers(n))] = np.nan
        for lower in (False, True):
            subjects = [str(k) for k in range(n)]
            got = _vector(ConstraintName.ADV_CAP, (), subjects, values, limits, lower)
            want, all_hold = _plain_vector(values, limits, lower)
            assert [(c.subject, repr(c.value), c.limit) for c in got] == want, (values, limits)
            assert _vector_holds(values, limits, lower) == all_hold, (values, limits, lower)
            assert all_hold == all(c.holds() for c in got) or np.isnan(values).any()


def test_exact_row_sum_is_numpys_row_sum_bit_for_bit() -> None:
    from rebalancer.optimizer.terms.base import exact_row_sum

    rng = np.random.default_rng(3)
    for k, rows in [(k, rows) for k in range(11) for rows in (5000, 20)]:  # adds, reduction
        a = rng.standard_normal((rows, k)) * np.exp(rng.uniform(-30, 30, (rows, k)))
        if k:
            a[:7] = rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0], (7, k))
            a[7] = -0.0  # a row of negative zeros sums to 0.0
        with np.errstate(invalid="ignore"):  # inf - inf gives NaN in both
            got, want = exact_row_sum(a), a.sum(axis=1)
        assert got.tobytes() == want.tobytes(), k


def test_sigma_times_gives_the_plain_floats_across_requests() -> None:
    import dataclasses

    from rebalancer.optimizer.terms.base import sigma_times

    data, _ = _setup()
    x = np.array([0.3, -0.2])
    for d in (data, data, dataclasses.replace(data, specific_sd=data.specific_sd * 3.0)):
        plain = d.factor_load @ (d.factor_load.T @ x) + d.specific_sd**2 * x
        assert sigma_times(d, x).tobytes() == plain.tobytes()


def test_wash_sale_check_without_conflicts_is_the_vector_check() -> None:
    from rebalancer.optimizer.terms.constraints import _vector, recent_mask

    data, prob = _setup()
    data.lot_loss[0, 1] = True  # lot a2 is at a loss
    f = ("policy.wash_sale_days", "recent_buys")
    for recent in (set(), {data.group_names[0]}):
        data.recent_groups = recent
        for t in (_trade(data, 0.0, 0.01, 0.02), _trade(data, 0.1, 0.0, 0.0)):
            mask = recent_mask(data)
            refused = float((t.lot_sell * data.lot_loss)[mask].sum()) if mask.any() else 0.0
            assert not prob.wash.conflicts(data, t, 1e-12)
            want = _vector(prob.wash.name, f, ["recent_buys"], np.array([refused]), None)
            assert prob.wash.check(data, t) == want


def test_set_param_fixed_keeps_only_the_very_object_it_checked() -> None:
    from rebalancer.optimizer.terms.base import set_param

    vec = cp.Parameter(3, nonneg=True, name="v")
    ok = np.array([1.0, 2.0, 3.0])
    set_param(vec, ok, fixed=True)
    set_param(vec, ok, fixed=True)  # the same object: kept as stored
    assert vec.value is ok
    with pytest.raises(ValueError, match="must be >= 0"):
        set_param(vec, np.array([1.0, -2.0, 3.0]), fixed=True)  # another object: checked
    with pytest.raises(ValueError, match="needs shape"):
        set_param(vec, np.zeros(2), fixed=True)


def test_second_update_of_a_request_sets_the_same_values() -> None:
    data, prob = _setup()
    params = list(prob.problem.parameters())
    prob.update(data)
    first = {p.name(): np.array(p.value, copy=True) for p in params}
    prob.update(data)
    for p in params:
        assert np.array_equal(p.value, first[p.name()]), p.name()


def test_summed_post_is_the_plain_sum_for_each_weights_object() -> None:
    data, _ = _setup()
    t = _trade(data, 0.07, 0.02, 0.06)
    s = t.summed()
    for w in (data.w, data.w, data.w * 2.0):
        assert s.post(w).tobytes() == (w + t.z).tobytes() == t.post(w).tobytes()
    assert s.post(data.w) is s.post(data.w)  # made once per weights object
