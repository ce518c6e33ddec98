"""Why each trade is there: reasons, a sentence, and its effect on risk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.enums import Reason, Side
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.optimizer.terms.base import Arr, sigma_times

_TINY = 1e-9


@dataclass(frozen=True, slots=True)
class RiskEffects:
    """Volatility and worst stress loss before the recommendation and after each trade alone
    (fractions of NAV); VaR is ``z_alpha`` times the volatility."""

    vol_before: float
    vol_after: Arr
    stress_before: float
    stress_after: Arr
    z_alpha: float

    def fields(self) -> list[dict[str, float]]:
        """One ``RiskEffect``'s fields per trade (plain dicts, validated with the response)."""
        vb, za, sb = self.vol_before, self.z_alpha, self.stress_before
        return [
            {
                "volatility_before": vb,
                "volatility_after": a,
                "var_before": za * vb,
                "var_after": za * a,
                "stress_loss_before": sb,
                "stress_loss_after": s,
            }
            for a, s in zip(self.vol_after.tolist(), self.stress_after.tolist(), strict=True)
        ]


def risk_effect_arrays(data: ProblemData, before: Arr, idx: np.ndarray, dz: Arr) -> RiskEffects:
    """Risk before and after each single-instrument trade, from ``Sigma w`` computed once.

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
    sii = (data.factor_load[idx] ** 2).sum(axis=1) + data.specific_sd[idx] ** 2
    vb = float(np.sqrt(max(var0, 0.0)))
    va = np.sqrt(np.maximum(var0 + 2 * dz * sw[idx] + dz * dz * sii, 0.0))
    if data.stress_names:
        loss0 = -(data.stress_returns @ before)
        sb = float(max(0.0, loss0.max()))
        loss1 = loss0[:, None] - data.stress_returns[:, idx] * dz[None, :]
        sa = np.maximum(0.0, loss1.max(axis=0))
    else:
        sb, sa = 0.0, np.zeros(idx.size)
    return RiskEffects(vb, va, sb, sa, data.z_alpha)


def risk_effects(
    data: ProblemData, before: Arr, idx: np.ndarray, dz: Arr
) -> list[dict[str, float]]:
    """:func:`risk_effect_arrays` as ``RiskEffect`` fields, one dict per trade."""
    return risk_effect_arrays(data, before, idx, dz).fields()


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
        self.before_arr = before
        self.after_arr = after
        self.loss_groups = loss_groups
        self.risk_limited = _risk_limited(data)
        self.floor_active = data.cash_floor > 0 and data.cash / data.nav < data.cash_floor + 1e-9
        self.cash_reason = self.floor_active or req.policy.raise_cash > 0
        self._subs_of: dict[str, list[str]] | None = None
        self._group_of: dict[str, str] | None = None

    def _substituted(self, inst: str) -> list[str]:
        if self._subs_of is None:
            self._subs_of = {}
            for x in self.req.instruments:
                for s in x.substitutes:
                    self._subs_of.setdefault(s, []).append(x.id)
        return self._subs_of.get(inst, [])

    def explain_all(
        self,
        idx: np.ndarray,
        is_sell: np.ndarray,
        losses: Arr,
        loss_tax: Arr,
        effects: RiskEffects,
    ) -> tuple[list[list[Reason]], list[str]]:
        """Reasons and explanation of every trade: instrument ``idx[k]``, a sell when
        ``is_sell[k]``; ``losses[k]`` is the realized loss of its loss lots (currency, <= 0)
        and ``loss_tax[k]`` the tax on them (currency, <= 0: tax saved). The conditions are
        evaluated for all trades at once; only the sentences are built one by one."""
        d = self.data
        b, a, tg = self.before_arr[idx], self.after_arr[idx], d.target[idx]
        drift = np.abs(a - tg) < np.abs(b - tg) - _TINY
        loss = losses < 0
        cash = is_sell & self.cash_reason
        subst = ~is_sell & ~d.has_target[idx]
        va, vb = effects.vol_after, effects.vol_before
        risk = (va < vb - _TINY) | (effects.stress_after < effects.stress_before - _TINY)
        risk &= self.risk_limited
        cash_text = f"raises cash toward the floor of {d.cash_floor:.2%} of NAV"
        ids = d.ids
        reasons_out: list[list[Reason]] = []
        texts: list[str] = []
        rows = zip(
            idx.tolist(),
            is_sell.tolist(),
            drift.tolist(),
            loss.tolist(),
            cash.tolist(),
            subst.tolist(),
            risk.tolist(),
            strict=True,
        )
        b_l, a_l, tg_l = b.tolist(), a.tolist(), tg.tolist()
        loss_l, tax_l, va_l = losses.tolist(), loss_tax.tolist(), va.tolist()
        for k, (i, sell, dr, lo, ca, su, ri) in enumerate(rows):
            inst = ids[i]
            reasons: list[Reason] = []
            parts: list[str] = []
            if dr:
                reasons.append(Reason.DRIFT_REMOVED)
                parts.append(
                    f"moves {inst} from {b_l[k]:.2%} to {a_l[k]:.2%} of NAV (target {tg_l[k]:.2%})"
                )
            if lo:
                reasons.append(Reason.LOSS_HARVESTED)
                parts.append(
                    f"harvests a loss of {-loss_l[k]:,.2f}, saving about {-tax_l[k]:,.2f} of tax"
                )
            if ca:
                reasons.append(Reason.CASH_RAISED)
                parts.append(cash_text)
            if su:
                reasons.append(Reason.SUBSTITUTE)
                parts.append(self._substitute_text(inst))
            if ri:
                reasons.append(Reason.RISK_REDUCED)
                parts.append(f"lowers volatility {vb:.4f} -> {va_l[k]:.4f}")
            if not reasons:
                reasons.append(Reason.CONSTRAINT)
                parts.append("needed to keep the policy limits after rounding")
            reasons_out.append(reasons)
            texts.append(f"{'Sell' if sell else 'Buy'} {inst}: {'; '.join(parts)}.")
        return reasons_out, texts

    def _substitute_text(self, inst: str) -> str:
        subs_of = self._substituted(inst)
        if self._group_of is None:
            self._group_of = dict(zip(self.data.ids, self.data.groups, strict=True))
        sold = [x for x in subs_of if self._group_of[x] in self.loss_groups]
        whom = ", ".join(sold or subs_of)
        return f"substitutes for {whom} to keep its exposure without a wash sale"

    def explain(
        self, i: int, side: Side, losses: float, loss_tax: float, effect: dict[str, float]
    ) -> tuple[list[Reason], str]:
        """Reasons for the trade of instrument ``i`` and its explanation (one trade of
        :meth:`explain_all`; ``effect`` holds its ``RiskEffect`` fields)."""
        eff = RiskEffects(
            effect["volatility_before"],
            np.array([effect["volatility_after"]]),
            effect["stress_loss_before"],
            np.array([effect["stress_loss_after"]]),
            self.data.z_alpha,
        )
        reasons, texts = self.explain_all(
            np.array([i]),
            np.array([side is Side.SELL]),
            np.array([losses]),
            np.array([loss_tax]),
            eff,
        )
        return reasons[0], texts[0]


__all__ = ["Explainer", "RiskEffects", "risk_effect_arrays", "risk_effects"]
