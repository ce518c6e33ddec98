"""An independent, plain CVXPY statement of the household problem (per account variables,
dense covariance matrices): the reference the stacked conic formulation is tested against.

Written from docs/households.md, not from the solver code: the shared pieces are the
household data (``build_household``), i.e. the arrays every formulation starts from, and the
risk limits as the solver states them (tightened by the most rounding can move them, like the
single-account engine; ``tightened`` and ``household_te_limit``).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import BIG
from rebalancer.optimizer.engine import tightened
from rebalancer.optimizer.household.data import HouseholdData
from rebalancer.optimizer.household.problem import household_te_limit


def _sigma(load: np.ndarray, sd: np.ndarray) -> np.ndarray:
    s = load @ load.T + np.diag(sd**2)
    return 0.5 * (s + s.T) + 1e-12 * np.eye(len(sd))


def plain_optimum(hh: HouseholdData) -> float:
    """Optimal continuous household objective (fraction of household NAV)."""
    terms: list[cp.Expression] = []
    cons: list[cp.Constraint] = []
    x = np.zeros(len(hh.ids))
    x_expr: cp.Expression = cp.Constant(np.zeros(len(hh.ids)))
    nl = len(hh.links)
    tr = cp.Variable(nl, nonneg=True) if nl else None
    for n, a in enumerate(hh.accounts):
        d, s = a.data, a.share
        td = tightened(d)
        buy = cp.Variable(d.n, nonneg=True)
        lot = cp.Variable(d.lot_w.shape, nonneg=True)
        sold = cp.sum(lot, axis=1)
        z, traded = buy - sold, buy + sold
        cons += [buy <= d.buy_ub, lot <= d.lot_ub, traded <= d.adv_cap]
        cons.append(cp.sum(traded) <= d.turnover_limit)
        net_in: cp.Expression = cp.Constant(0.0)
        if tr is not None:
            for m, (src, dst) in enumerate(hh.links):
                if dst == n:
                    net_in = net_in + tr[m]
                if src == n:
                    net_in = net_in - tr[m]
        cons.append(cp.sum(z) - net_in / s <= d.cash / d.nav - d.cash_floor)
        sig = _sigma(d.factor_load, d.specific_sd)
        active = d.w + z - d.target
        if hh.account_weight > 0:
            terms.append(s * hh.account_weight * d.gamma * cp.quad_form(active, sig))
        root = np.linalg.cholesky(sig)
        if d.te_limit < BIG:
            cons.append(cp.norm(root.T @ active) <= td.te_limit)
        if d.var_limit < BIG:
            cons.append(d.z_alpha * cp.norm(root.T @ (d.w + z)) <= td.var_limit)
        for r, lim in zip(d.stress_returns, td.stress_limit, strict=True):
            cons.append(-(r @ (d.w + z)) <= lim)
        terms += [
            s * (d.cost @ traded),
            s * cp.sum(cp.multiply(d.impact, cp.power(traded, 1.5))),
            s * cp.sum(cp.multiply(d.lot_tax, lot)),
            s * hh.horizon * (a.drag @ (d.w + z)),
        ]
        m_a = np.zeros((len(hh.ids), d.n))
        m_a[a.idx, np.arange(d.n)] = 1.0
        x = x + s * m_a @ d.w
        x_expr = x_expr + s * (m_a @ z)
    if tr is not None:
        cons.append(tr <= hh.link_cap)
        terms.append(hh.transfer_cost * cp.sum(tr))
    if hh.target is not None:
        sig_h = _sigma(hh.load, hh.spec)
        dev = x + x_expr - hh.target
        terms.append(hh.gamma * cp.quad_form(dev, sig_h))
        if hh.te_limit is not None:
            cons.append(cp.norm(np.linalg.cholesky(sig_h).T @ dev) <= household_te_limit(hh))
    prob = cp.Problem(cp.Minimize(1e4 * cp.sum(cp.hstack(terms))), cons)
    prob.solve(solver=cp.CLARABEL)
    assert prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), prob.status
    return float(prob.value) / 1e4
