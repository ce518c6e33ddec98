"""Objective terms: tracking, spread and fees, market impact, tax (fractions of NAV)."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import ProblemData, Shape
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import (
    CostTerm,
    Memo,
    TradeVec,
    Variables,
    set_param,
    sigma_times,
)


class ActiveRisk:
    """Active factor and specific exposures ``u = L'(w + z - w*)``, ``v = s * (w + z - w*)``.

    ``Sigma = L L' + diag(s^2)``; the auxiliary variables keep every risk expression DPP and
    let tracking, tracking-error and VaR terms share them.
    """

    def __init__(self, shape: Shape, v: Variables) -> None:
        self.load = cp.Parameter((shape.n, shape.factors), name="factor_load")
        self.sd = cp.Parameter(shape.n, nonneg=True, name="specific_sd")
        self.u0 = cp.Parameter(shape.factors, name="active_factor0")
        self.v0 = cp.Parameter(shape.n, name="active_specific0")
        self.u = cp.Variable(shape.factors, name="active_factor")
        self.v = cp.Variable(shape.n, name="active_specific")
        self.constraints: list[cp.Constraint] = [
            self.u == self.load.T @ v.z + self.u0,
            self.v == atoms.multiply(self.sd, v.z) + self.v0,
        ]
        self._u0, self._v0 = Memo(), Memo()

    def update(self, data: ProblemData) -> None:
        set_param(self.load, data.factor_load, fixed=True)
        set_param(self.sd, data.specific_sd, fixed=True)
        # the same request's second update reuses the products (see Memo)
        w, tgt, load, sd = data.w, data.target, data.factor_load, data.specific_sd
        set_param(self.u0, self._u0.get((w, tgt, load), lambda: load.T @ (w - tgt)), fixed=True)
        set_param(self.v0, self._v0.get((w, tgt, sd), lambda: sd * (w - tgt)), fixed=True)


class TrackingTerm(CostTerm):
    """``gamma * (w + z - w*)' Sigma (w + z - w*)``."""

    label = "tracking"

    def __init__(self, risk: ActiveRisk) -> None:
        self.gamma = cp.Parameter(nonneg=True, name="gamma")
        self._expr: cp.Expression = self.gamma * (
            atoms.sum_squares(risk.u) + atoms.sum_squares(risk.v)
        )

    @property
    def expr(self) -> cp.Expression:
        return self._expr

    def update(self, data: ProblemData) -> None:
        set_param(self.gamma, data.gamma)

    def value(self, data: ProblemData, t: TradeVec) -> float:
        a = t.post(data.w) - data.target
        return data.gamma * float(a @ sigma_times(data, a))


class SpreadFeesTerm(CostTerm):
    """``sum_i (half_spread_bps_i + commission_bps) / 1e4 * |z_i|``."""

    label = "spread_and_fees"

    def __init__(self, shape: Shape, v: Variables) -> None:
        self.rate = cp.Parameter(shape.n, nonneg=True, name="spread_fee_rate")
        self._expr: cp.Expression = self.rate @ v.traded

    @property
    def expr(self) -> cp.Expression:
        return self._expr

    def update(self, data: ProblemData) -> None:
        set_param(self.rate, data.cost, fixed=True)

    def value(self, data: ProblemData, t: TradeVec) -> float:
        return float(data.cost @ t.traded)


class ImpactTerm(CostTerm):
    """``sum_i coef * sigma_i * |z_i|^1.5 * sqrt(NAV / ADV value_i)`` (square-root law)."""

    label = "impact"

    def __init__(self, shape: Shape, v: Variables) -> None:
        self.coef = cp.Parameter(shape.n, nonneg=True, name="impact_coef")
        self._expr = atoms.sum_(atoms.multiply(self.coef, atoms.power(v.traded, 1.5)))

    @property
    def expr(self) -> cp.Expression:
        return self._expr

    def update(self, data: ProblemData) -> None:
        set_param(self.coef, data.impact, fixed=True)

    def value(self, data: ProblemData, t: TradeVec) -> float:
        return float(data.impact @ np.maximum(t.traded, 0.0) ** 1.5)


class TaxTerm(CostTerm):
    """``sum_l rate_l * sold_l * (price - basis_l) / price`` (losses are negative)."""

    label = "tax"

    def __init__(self, shape: Shape, v: Variables) -> None:
        self.rate = cp.Parameter((shape.n, shape.lots_per_instrument), name="lot_tax_rate")
        self._expr = atoms.sum_(atoms.multiply(self.rate, v.lot_sell))

    @property
    def expr(self) -> cp.Expression:
        return self._expr

    def update(self, data: ProblemData) -> None:
        set_param(self.rate, data.lot_tax, fixed=True)

    def value(self, data: ProblemData, t: TradeVec) -> float:
        return float((data.lot_tax * t.lot_sell).sum())  # np.sum's own call, less wrapping
