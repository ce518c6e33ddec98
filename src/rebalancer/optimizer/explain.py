"""Why each trade is there: reasons, a sentence, and its effect on risk."""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.enums import Reason, Side
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import Arr, sigma_times

_TINY = 1e-9


def risk_effects(
    data: ProblemData, before: Arr, idx: np.ndarray, dz: Arr
) -> list[dict[str, float]]:
    """Risk before and after each single-instrument trade, from ``Sigma w`` computed once,
    as ``RiskEffect`` fields (plain dicts, validated with the whole response).

    Parameters
    ----------
    data
        The request's arrays.
    before
        Weights before trading (fractions of NAV), (n,).
    idx
        Instrument of each trade, (T,).
    dz
        Weight change of each trade (fraction of NAV, buy > 0), (T,).
    """
    sw = sigma_times(data, before)
    var0 = float(before @ sw)
    sii = (data.factor_load**2).sum(axis=1) + data.specific_sd**2
    vb = float(np.sqrt(max(var0, 0.0)))
    va = np.sqrt(np.maximum(var0 + 2 * dz * sw[idx] + dz * dz * sii[idx], 0.0))
    if data.stress_names:
        loss0 = -(data.stress_returns @ before)
        sb = float(max(0.0, loss0.max()))
        loss1 = loss0[:, None] - data.stress_returns[:, idx] * dz[None, :]
        sa = np.maximum(0.0, loss1.max(axis=0)).tolist()
    else:
        sb, sa = 0.0, [0.0] * idx.size
    za = data.z_alpha
    return [
        {
            "volatility_before": vb,
            "volatility_after": a,
            "var_before": za * vb,
            "var_after": za * a,
            "stress_loss_before": sb,
            "stress_loss_after": s,
        }
        for a, s in zip(va.tolist(), sa, strict=True)
    ]


def _risk_limited(data: ProblemData) -> bool:
    return bool(
        data.var_limit < BIG
        or data.te_limit < BIG
        or (data.stress_limit < BIG).any()
        or len(data.budget_sectors) > 0
    )


class Explainer:
    """Reasons and a one-paragraph explanation per trade, a reviewer can approve.

    Parameters
    ----------
    req, data
        The request and its arrays.
    before, after
        Weights before and after the whole recommendation (fractions of NAV).
    loss_groups
        Wash-sale groups the recommendation sells at a loss.
    """

    def __init__(
        self,
        req: AnalyzeRequest,
        data: ProblemData,
        before: Arr,
        after: Arr,
        loss_groups: set[str],
    ) -> None:
        self.req = req
        self.data = data
        self.before = before.tolist()
        self.after = after.tolist()
        self.target = data.target.tolist()
        self.loss_groups = loss_groups
        self.risk_limited = _risk_limited(data)
        self.floor_active = data.cash_floor > 0 and data.cash / data.nav < data.cash_floor + 1e-9
        self.cash_reason = self.floor_active or req.policy.raise_cash > 0
        self.has_target = data.has_target.tolist()
        self._subs_of: dict[str, list[str]] | None = None

    def _substituted(self, inst: str) -> list[str]:
        if self._subs_of is None:
            self._subs_of = {}
            for x in self.req.instruments:
                for s in x.substitutes:
                    self._subs_of.setdefault(s, []).append(x.id)
        return self._subs_of.get(inst, [])

    def explain(
        self, i: int, side: Side, losses: float, loss_tax: float, effect: dict[str, float]
    ) -> tuple[list[Reason], str]:
        """Reasons for the trade of instrument ``i`` and its explanation.

        ``losses`` is the realized loss of its loss lots (currency, <= 0) and ``loss_tax`` the
        tax on them (currency, <= 0: tax saved).
        """
        d = self.data
        inst = d.ids[i]
        reasons: list[Reason] = []
        parts: list[str] = []
        b, a, tg = self.before[i], self.after[i], self.target[i]
        if abs(a - tg) < abs(b - tg) - _TINY:
            reasons.append(Reason.DRIFT_REMOVED)
            parts.append(f"moves {inst} from {b:.2%} to {a:.2%} of NAV (target {tg:.2%})")
        if losses < 0:
            reasons.append(Reason.LOSS_HARVESTED)
            parts.append(f"harvests a loss of {-losses:,.2f}, saving about {-loss_tax:,.2f} of tax")
        if side is Side.SELL and self.cash_reason:
            reasons.append(Reason.CASH_RAISED)
            parts.append(f"raises cash toward the floor of {d.cash_floor:.2%} of NAV")
        if side is Side.BUY and not self.has_target[i]:
            subs_of = self._substituted(inst)
            group_of = dict(zip(d.ids, d.groups, strict=True))
            sold = [x for x in subs_of if group_of[x] in self.loss_groups]
            reasons.append(Reason.SUBSTITUTE)
            whom = ", ".join(sold or subs_of)
            parts.append(f"substitutes for {whom} to keep its exposure without a wash sale")
        vb, va = effect["volatility_before"], effect["volatility_after"]
        if self.risk_limited and (
            va < vb - _TINY or effect["stress_loss_after"] < effect["stress_loss_before"] - _TINY
        ):
            reasons.append(Reason.RISK_REDUCED)
            parts.append(f"lowers volatility {vb:.4f} -> {va:.4f}")
        if not reasons:
            reasons.append(Reason.CONSTRAINT)
            parts.append("needed to keep the policy limits after rounding")
        verb = "Buy" if side is Side.BUY else "Sell"
        return reasons, f"{verb} {inst}: " + "; ".join(parts) + "."


__all__ = ["Explainer", "risk_effects"]
