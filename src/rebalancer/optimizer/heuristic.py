"""Last step of the solver chain: a safe move toward the targets, checked like any answer.

Moves a fraction ``alpha`` of the way to the targets (largest of a short grid that satisfies
every constraint and improves the objective), selling lots with the lowest tax per unit of
weight first (losses, then small gains, long-term before short-term at equal gain).
When no fraction works, the answer is to trade nothing.
"""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.problem import CompiledProblem
from rebalancer.optimizer.terms.base import TradeVec

ALPHAS = (1.0, 0.75, 0.5, 0.25, 0.1)


def _sell_lots(data: ProblemData, amount: np.ndarray) -> np.ndarray:
    lots = np.zeros_like(data.lot_ub)
    for i in np.flatnonzero(amount > 0):
        rest = float(amount[i])
        for j in np.argsort(data.lot_tax[i], kind="stable"):
            take = min(rest, float(data.lot_ub[i, j]))
            lots[i, j] = take
            rest -= take
            if rest <= 0:
                break
    return lots


def heuristic_trade(data: ProblemData, prob: CompiledProblem) -> TradeVec:
    """A feasible improving trade toward the targets, or the zero trade."""
    zero = TradeVec.zero(data.shape)
    f0 = prob.objective(data, zero)
    gap = data.target - data.w
    for alpha in ALPHAS:
        want = alpha * gap
        sell = np.minimum(np.clip(-want, 0.0, None), data.adv_cap)
        lots = _sell_lots(data, sell)
        buy = np.minimum(np.clip(want, 0.0, None), np.minimum(data.buy_ub, data.adv_cap))
        room = data.cash / data.nav + lots.sum() - data.cash_floor
        if buy.sum() > room:
            buy *= max(room, 0.0) / buy.sum()
        t = TradeVec(buy, lots)
        if all(c.holds() for c in prob.checks(data, t)) and prob.objective(data, t) < f0:
            return t
    return zero
