"""The stacked conic household problem reaches the optimum of an independent plain CVXPY
statement (plain_cvxpy.py), with and without household targets, links and risk limits; the
risk limits bind and hold after rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hh_factory import random_household
from plain_cvxpy import plain_optimum

from rebalancer.optimizer.engine import tightened
from rebalancer.optimizer.household import HouseholdRecommender, HouseholdRequest
from rebalancer.optimizer.household.data import HouseholdData, build_household, check_household
from rebalancer.optimizer.household.problem import HouseholdTrade, household_te_limit
from rebalancer.optimizer.household.report import household_te, x_after
from rebalancer.optimizer.terms.base import volatility

REC = HouseholdRecommender()
RTOL, ATOL = 1e-5, 1e-8
"""Both are interior-point answers to 1e-8; objectives are fractions of household NAV."""


def _fresh(req: HouseholdRequest) -> HouseholdData:
    check_household(req)
    return build_household(req)


def _edit(req: HouseholdRequest, fn: Any) -> HouseholdRequest:
    body = req.model_dump(mode="json")
    fn(body)
    return HouseholdRequest.model_validate(body)


def _assert_same_optimum(req: HouseholdRequest) -> tuple[float, HouseholdData, HouseholdTrade]:
    mine, hh, ht = REC.relaxed(req)
    ref = plain_optimum(_fresh(req))
    assert mine == pytest.approx(ref, rel=RTOL, abs=ATOL)
    return mine, hh, ht


@pytest.mark.parametrize("with_targets", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_stacked_problem_matches_plain_cvxpy(seed: int, with_targets: bool) -> None:
    _assert_same_optimum(random_household(seed, n_accounts=3, n=5, targets=with_targets))


@pytest.mark.parametrize("seed", range(3))
def test_stacked_problem_matches_plain_cvxpy_with_links(seed: int) -> None:
    def link(body: dict[str, Any]) -> None:
        body["links"] = [
            {"from_account": "A0", "to_account": "A1", "max_amount": 20_000.0},
            {"from_account": "A2", "to_account": "A0"},
        ]
        for acct in body["accounts"]:
            acct["request"]["policy"]["min_cash_weight"] = 0.02

    _assert_same_optimum(_edit(random_household(seed, 3, 5, targets=True), link))


def _account_te(hh: HouseholdData, ht: HouseholdTrade, n: int) -> float:
    d = hh.accounts[n].data
    return volatility(d, d.w + ht.trades[n].z - d.target)


def test_account_tracking_error_limit_binds() -> None:
    base = random_household(1, 3, 5, targets=True)
    free, _, ht = REC.relaxed(base)
    te = _account_te(_fresh(base), ht, 0)
    limit = 0.9 * te

    def cap(body: dict[str, Any]) -> None:
        body["accounts"][0]["request"]["policy"]["max_tracking_error"] = limit

    req = _edit(base, cap)
    value, hh, ht = _assert_same_optimum(req)
    assert value > free + 1e-9
    # binding at the limit the solver uses (tightened by what rounding can move)
    solver_limit = tightened(hh.accounts[0].data).te_limit
    assert limit * 0.5 <= solver_limit < limit
    assert _account_te(hh, ht, 0) == pytest.approx(solver_limit, rel=1e-4)
    out = REC.analyze(req)  # rounded and re-checked in NumPy (raises on a violation)
    te_checks = [
        c for c in out.accounts[0].analysis.constraints if c.name.value == "tracking_error"
    ]
    assert te_checks and all(c.value <= limit * (1 + 1e-9) for c in te_checks)


def test_account_var_and_stress_limits_bind() -> None:
    base = random_household(2, 3, 5, targets=False)
    free, hh0, ht = REC.relaxed(base)
    d = hh0.accounts[1].data
    post = d.w + ht.trades[1].z
    var = d.z_alpha * volatility(d, post)
    shock = {i: -0.3 for i in d.ids[:3]}
    loss = -sum(r * post[d.ids.index(i)] for i, r in shock.items())

    def limit_var(body: dict[str, Any]) -> None:
        body["accounts"][1]["request"]["policy"]["max_var"] = 0.9 * var

    value_var, hh, ht = _assert_same_optimum(_edit(base, limit_var))
    d = hh.accounts[1].data
    assert d.z_alpha * volatility(d, d.w + ht.trades[1].z) == pytest.approx(
        tightened(d).var_limit, rel=1e-4
    )
    assert value_var > free + 1e-9
    assert tightened(d).var_limit < 0.9 * var

    def limit_stress(body: dict[str, Any]) -> None:
        body["accounts"][1]["request"]["policy"]["stress_scenarios"] = [
            {"name": "crash", "returns": shock, "max_loss": 0.9 * loss}
        ]

    req = _edit(base, limit_stress)
    _, hh, ht = _assert_same_optimum(req)
    d = hh.accounts[1].data
    after = -(d.stress_returns @ (d.w + ht.trades[1].z))
    assert float(after[0]) == pytest.approx(float(tightened(d).stress_limit[0]), rel=1e-4)
    out = REC.analyze(req)  # rounded answer re-checked in NumPy
    stress = [c for c in out.accounts[1].analysis.constraints if c.name.value == "stress"]
    assert stress and all(c.value <= 0.9 * loss * (1 + 1e-9) for c in stress)


def test_household_tracking_error_limit_binds() -> None:
    base = random_household(3, 3, 5, targets=True)
    free, hh0, ht = REC.relaxed(base)
    te = household_te(hh0, x_after(hh0, ht.trades))
    before = household_te(hh0, hh0.x_before())
    assert te < before

    def cap(body: dict[str, Any]) -> None:
        body["policy"]["max_tracking_error"] = 0.9 * te

    req = _edit(base, cap)
    value, hh, ht = _assert_same_optimum(req)
    assert value > free + 1e-9
    assert household_te(hh, x_after(hh, ht.trades)) == pytest.approx(
        household_te_limit(hh), rel=1e-4
    )
    out = REC.analyze(req)  # raises if rounding broke the household limit
    assert out.drift_after is not None


def test_household_tracking_error_limit_needs_targets() -> None:
    req = _edit(
        random_household(0, 2, 4, targets=False),
        lambda b: b["policy"].update({"max_tracking_error": 0.01}),
    )
    with pytest.raises(Exception) as err:
        REC.analyze(req)
    assert getattr(err.value, "fields", None) == ["policy.max_tracking_error"]


def test_no_dense_covariance_in_the_stacked_problem() -> None:
    """Size grows linearly: doubling the accounts about doubles the conic data."""
    sizes = []
    for n_acc in (2, 4):
        hh = _fresh(random_household(5, n_acc, 6, targets=True))
        prob, _ = REC.problem_for(hh)
        prob.update(hh)
        assert prob.data is not None
        sizes.append(prob.data.A.nnz)
    assert sizes[1] <= 2.2 * sizes[0]
    assert np.isfinite(sizes).all()
