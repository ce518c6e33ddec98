"""Risk constraints: tracking error, parametric VaR (SOC), stress losses, sector risk shares."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData, Shape
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import (
    Arr,
    Check,
    ConstraintTerm,
    Memo,
    TradeVec,
    Variables,
    set_param,
    sigma_times,
    volatility,
    within,
)
from rebalancer.optimizer.terms.costs import ActiveRisk


class TrackingErrorLimit(ConstraintTerm):
    """``||Sigma^(1/2) (w + z - w*)|| <= max_tracking_error`` (second-order cone)."""

    name = ConstraintName.TRACKING_ERROR

    def __init__(self, risk: ActiveRisk) -> None:
        super().__init__()
        self.cap = cp.Parameter(nonneg=True, name="te_cap")
        self.constraints = [atoms.norm(atoms.hstack([risk.u, risk.v]), 2) <= self.cap]

    def fields(self, data: ProblemData) -> list[str]:
        return ["policy.max_tracking_error"]

    def update(self, data: ProblemData) -> None:
        set_param(self.cap, self.limit(data.te_limit))

    @staticmethod
    def _te(data: ProblemData, t: TradeVec) -> float:
        """Ex-ante tracking error after ``t``."""
        return volatility(data, t.post(data.w) - data.target)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        te = self._te(data, t)
        return [Check(self.name, ("policy.max_tracking_error",), "", te, data.te_limit)]

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return within(self._te(data, t), data.te_limit)


class VarLimit(ConstraintTerm):
    """Parametric VaR ``z_alpha * ||Sigma^(1/2) (w + z)|| <= max_var`` (zero mean; SOC)."""

    name = ConstraintName.VAR

    def __init__(self, shape: Shape, risk: ActiveRisk) -> None:
        super().__init__()
        self.cap = cp.Parameter(nonneg=True, name="var_cap_over_z")
        self.uw = cp.Parameter(shape.factors, name="target_factor")
        self.vw = cp.Parameter(shape.n, name="target_specific")
        total = atoms.hstack([risk.u + self.uw, risk.v + self.vw])
        self.constraints = [atoms.norm(total, 2) <= self.cap]
        self._uw, self._vw = Memo(), Memo()

    def fields(self, data: ProblemData) -> list[str]:
        return ["policy.max_var", "policy.var_confidence"]

    def update(self, data: ProblemData) -> None:
        set_param(self.cap, self.limit(data.var_limit / data.z_alpha))
        tgt, load, sd = data.target, data.factor_load, data.specific_sd
        set_param(self.uw, self._uw.get((tgt, load), lambda: load.T @ tgt), fixed=True)  # see Memo
        set_param(self.vw, self._vw.get((tgt, sd), lambda: sd * tgt), fixed=True)

    @staticmethod
    def _var(data: ProblemData, t: TradeVec) -> float:
        """Parametric VaR after ``t`` (fraction of NAV)."""
        return data.z_alpha * volatility(data, t.post(data.w))

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        var = self._var(data, t)
        return [Check(self.name, tuple(self.fields(data)), "", var, data.var_limit)]

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return within(self._var(data, t), data.var_limit)


class StressLimit(ConstraintTerm):
    """Loss in each scenario ``-r_s' (w + z) <= max_loss_s``."""

    name = ConstraintName.STRESS

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.returns = cp.Parameter((shape.scenarios, shape.n), name="stress_returns")
        self.rhs = cp.Parameter(shape.scenarios, name="stress_rhs")
        self.constraints = [-(self.returns @ v.z) <= self.rhs]

    def update(self, data: ProblemData) -> None:
        lim = np.full_like(data.stress_limit, BIG) if self.relaxed else data.stress_limit
        set_param(self.returns, data.stress_returns, fixed=True)
        set_param(self.rhs, lim + data.stress_returns @ data.w)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        loss = -(data.stress_returns @ t.post(data.w))
        return [
            Check(
                self.name,
                (f"policy.stress_scenarios[{s}].max_loss",),
                name,
                float(loss[s]),
                float(data.stress_limit[s]),
            )
            for s, name in enumerate(data.stress_names)
        ]


def sector_shares(data: ProblemData, x: Arr) -> Arr:
    """Share of ex-ante volatility contributed by each budgeted sector at weights ``x``."""
    sx = sigma_times(data, x)
    total = float(x @ sx)
    out = np.zeros(len(data.budget_sectors))
    if total <= 0:
        return out
    share: Arr = (data.budget_mask * (x * sx)).sum(axis=1) / total
    return share


class SectorRiskShare(ConstraintTerm):
    """Risk budget ``x_S' Sigma x / x' Sigma x <= share_S`` per sector.

    Not convex, so it is enforced by sequential linearization: with ``g = Sigma x0`` at the
    previous answer ``x0``, ``sum_{i in S} g_i x_i <= share_S * g' x`` is linear in ``x`` and
    exact at a fixed point. The NumPy check uses the exact shares.
    """

    name = ConstraintName.SECTOR_RISK_SHARE

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.coef = cp.Parameter((shape.budget_sectors, shape.n), name="risk_share_coef")
        self.rhs = cp.Parameter(shape.budget_sectors, name="risk_share_rhs")
        self.constraints = [self.coef @ v.z <= self.rhs]
        self.point: Arr | None = None

    def linearize(self, data: ProblemData, x: Arr | None) -> None:
        """Set the linearization point (post-trade weights); ``None`` disables the constraint."""
        self.point = x
        self.update(data)

    def update(self, data: ProblemData) -> None:
        J = len(data.budget_sectors)
        if self.relaxed or self.point is None:
            set_param(self.coef, np.zeros((J, data.n)))
            set_param(self.rhs, np.zeros(J))
            return
        g = sigma_times(data, self.point)
        coef = (data.budget_mask.astype(float) - data.budget_share[:, None]) * g[None, :]
        scale = max(float(np.abs(coef).max()), 1e-12)
        set_param(self.coef, coef / scale)
        set_param(self.rhs, -(coef / scale) @ data.w)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        shares = sector_shares(data, t.post(data.w))
        return [
            Check(
                self.name,
                (f"policy.max_sector_risk_share.{sec}",),
                sec,
                float(shares[j]),
                float(data.budget_share[j]),
            )
            for j, sec in enumerate(data.budget_sectors)
        ]
