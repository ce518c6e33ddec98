"""Why each trade is there: reasons, a sentence, and its effect on risk."""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.enums import Reason, Side
from rebalancer.optimizer.schemas import AnalyzeRequest, LotSale, RiskEffect
from rebalancer.optimizer.terms.base import Arr, sigma_times

_TINY = 1e-9


class RiskEffects:
    """Risk before and after single-instrument trades, from ``Sigma w`` computed once."""

    def __init__(self, data: ProblemData, before: Arr) -> None:
        self.data = data
        self.before = before
        self.sw = sigma_times(data, before)
        self.var0 = float(before @ self.sw)
        self.sii = (data.factor_load**2).sum(axis=1) + data.specific_sd**2
        self.loss0 = -(data.stress_returns @ before)

    def of(self, i: int, dz: float) -> RiskEffect:
        """Effect of changing the weight of instrument ``i`` by ``dz`` (fraction of NAV)."""
        d = self.data
        vb = float(np.sqrt(max(self.var0, 0.0)))
        va = float(np.sqrt(max(self.var0 + 2 * dz * self.sw[i] + dz * dz * self.sii[i], 0.0)))
        loss1 = self.loss0 - d.stress_returns[:, i] * dz
        return RiskEffect(
            volatility_before=vb,
            volatility_after=va,
            var_before=d.z_alpha * vb,
            var_after=d.z_alpha * va,
            stress_loss_before=float(max(0.0, self.loss0.max())) if d.stress_names else 0.0,
            stress_loss_after=float(max(0.0, loss1.max())) if d.stress_names else 0.0,
        )


def _risk_limited(data: ProblemData) -> bool:
    return bool(
        data.var_limit < BIG
        or data.te_limit < BIG
        or (data.stress_limit < BIG).any()
        or len(data.budget_sectors) > 0
    )


def explain_trade(
    req: AnalyzeRequest,
    data: ProblemData,
    i: int,
    side: Side,
    before: Arr,
    after: Arr,
    lots: list[LotSale],
    loss_groups: set[str],
    effect: RiskEffect,
) -> tuple[list[Reason], str]:
    """Reasons for trade ``i`` and a one-paragraph explanation a reviewer can approve."""
    inst = data.ids[i]
    reasons: list[Reason] = []
    parts: list[str] = []
    gap_b, gap_a = abs(before[i] - data.target[i]), abs(after[i] - data.target[i])
    if gap_a < gap_b - _TINY:
        reasons.append(Reason.DRIFT_REMOVED)
        parts.append(
            f"moves {inst} from {before[i]:.2%} to {after[i]:.2%} of NAV "
            f"(target {data.target[i]:.2%})"
        )
    losses = sum(lot.realized_gain for lot in lots if lot.realized_gain < 0)
    if losses < 0:
        reasons.append(Reason.LOSS_HARVESTED)
        tax = sum(lot.tax_currency for lot in lots if lot.realized_gain < 0)
        parts.append(f"harvests a loss of {-losses:,.2f}, saving about {-tax:,.2f} of tax")
    floor_active = data.cash_floor > 0 and data.cash / data.nav < data.cash_floor + 1e-9
    if side is Side.SELL and (floor_active or req.policy.raise_cash > 0):
        reasons.append(Reason.CASH_RAISED)
        parts.append(f"raises cash toward the floor of {data.cash_floor:.2%} of NAV")
    if side is Side.BUY and not data.has_target[i]:
        subs_of = [x.id for x in req.instruments if inst in x.substitutes]
        group_of = dict(zip(data.ids, data.groups, strict=True))
        sold = [x for x in subs_of if group_of[x] in loss_groups]
        reasons.append(Reason.SUBSTITUTE)
        whom = ", ".join(sold or subs_of)
        parts.append(f"substitutes for {whom} to keep its exposure without a wash sale")
    if _risk_limited(data) and (
        effect.volatility_after < effect.volatility_before - _TINY
        or effect.stress_loss_after < effect.stress_loss_before - _TINY
    ):
        reasons.append(Reason.RISK_REDUCED)
        parts.append(
            f"lowers volatility {effect.volatility_before:.4f} -> {effect.volatility_after:.4f}"
        )
    if not reasons:
        reasons.append(Reason.CONSTRAINT)
        parts.append("needed to keep the policy limits after rounding")
    verb = "Buy" if side is Side.BUY else "Sell"
    return reasons, f"{verb} {inst}: " + "; ".join(parts) + "."


__all__ = ["RiskEffects", "explain_trade"]
