"""Round a continuous answer to tradable shares and repair what rounding broke.

Buys round to the nearest multiple of ``lot_size``; an instrument's sells round likewise
(or to everything sellable when the answer sells nearly all of it) and are spread over its lots
following the optimizer's lot choice, then the cheapest-tax lots. Trades below
``min_trade_value`` are dropped. Cash floor, turnover and ADV caps broken by rounding are then
repaired by moving single ``lot_size`` steps, and risk limits by a greedy search over steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.terms.base import Arr, Check, TradeVec

CheckFn = Callable[[TradeVec], list[Check]]
_MAX_STEPS = 5000


@dataclass(slots=True)
class Shares:
    """A trade in shares: ``buy`` (n,) and ``lot`` sells (n, K), both >= 0."""

    buy: Arr
    lot: Arr

    def trade(self, data: ProblemData) -> TradeVec:
        """The same trade in fractions of NAV."""
        return TradeVec(self.buy * data.price / data.nav, self.lot * data.price[:, None] / data.nav)

    def copy(self) -> Shares:
        return Shares(self.buy.copy(), self.lot.copy())


def _sellable(data: ProblemData) -> Arr:
    out: Arr = np.where(data.lot_ub > 0, data.lot_qty, 0.0)
    return out


def _spread_sell(data: ProblemData, i: int, total: float, wish: Arr) -> Arr:
    """Shares of each lot of instrument ``i`` summing to ``total``, following ``wish``."""
    cap: Arr = _sellable(data)[i]
    out: Arr = np.minimum(np.floor(np.minimum(wish, cap) + 1e-9), cap)
    if total >= cap.sum() - 1e-9:
        return cap.copy()
    rest = total - out.sum()
    if rest > 0:
        order = sorted(range(cap.size), key=lambda j: (-(wish[j] - out[j]), data.lot_tax[i, j]))
        for j in order:
            add = min(rest, cap[j] - out[j])
            out[j] += add
            rest -= add
            if rest <= 1e-12:
                break
    elif rest < 0:
        order = sorted(range(cap.size), key=lambda j: (wish[j] - out[j], -data.lot_tax[i, j]))
        for j in order:
            take = min(-rest, out[j])
            out[j] -= take
            rest += take
            if rest >= -1e-12:
                break
    return out


def round_shares(data: ProblemData, t: TradeVec, min_trade_value: float) -> Shares:
    """Round the continuous trade ``t`` to shares (no repair)."""
    ls = data.lot_size
    buy = np.round(t.buy * data.nav / data.price / ls) * ls
    wish = t.lot_sell * data.nav / data.price[:, None]
    cap = _sellable(data)
    lot = np.zeros_like(wish)
    for i in range(data.n):
        want = float(wish[i].sum())
        if want <= 0:
            continue
        held = float(cap[i].sum())
        total = (
            held if want >= held - ls[i] / 2 else min(float(np.round(want / ls[i]) * ls[i]), held)
        )
        if total > 0:
            lot[i] = _spread_sell(data, i, total, wish[i])
    buy[buy * data.price < min_trade_value] = 0.0
    small = lot.sum(axis=1) * data.price < min_trade_value
    lot[small] = 0.0
    return Shares(buy, lot)


def _step_sell(data: ProblemData, s: Shares, i: int, delta: float) -> bool:
    """Add (``delta`` > 0) or remove shares of instrument ``i``'s sells; False if impossible."""
    cur = float(s.lot[i].sum())
    held = float(_sellable(data)[i].sum())
    new = min(max(cur + delta, 0.0), held)
    if abs(new - cur) < 1e-12:
        return False
    s.lot[i] = _spread_sell(data, i, new, s.lot[i])
    return True


def _worst_violation(checks: list[Check]) -> float:
    return sum(max(0.0, -c.slack) for c in checks if not c.holds())


def repair(
    data: ProblemData, s: Shares, target: TradeVec, trading: CheckFn, risk: CheckFn
) -> Shares:
    """Fix constraints broken by rounding with single ``lot_size`` steps.

    ``trading`` evaluates cash floor, turnover and ADV caps; ``risk`` the risk limits.
    ``target`` is the continuous answer, used to decide which trades rounding pushed too far.
    """
    s = s.copy()
    ls = data.lot_size
    want_buy = target.buy * data.nav / data.price
    want_sell = target.sell * data.nav / data.price
    for _ in range(_MAX_STEPS):
        bad = [c for c in trading(s.trade(data)) if not c.holds()]
        if not bad:
            break
        c = bad[0]
        excess_buy = np.where(s.buy > 0, (s.buy - want_buy) * data.price, -np.inf)
        sell_now = s.lot.sum(axis=1)
        if c.subject == "CASH":  # cash floor: fewer buys, else more sells
            if (s.buy > 0).any():
                i = int(np.argmax(excess_buy))
                s.buy[i] = max(s.buy[i] - ls[i], 0.0)
                continue
            room = _sellable(data).sum(axis=1) - sell_now
            deficit = np.where(room > 0, (want_sell - sell_now) * data.price, -np.inf)
            if not np.isfinite(deficit).any():
                break
            _step_sell(data, s, int(np.argmax(deficit)), float(ls[int(np.argmax(deficit))]))
            continue
        if c.subject in data.ids:  # ADV cap of one instrument
            i = data.ids.index(c.subject)
        else:  # turnover: undo the largest rounding excess
            excess_sell = np.where(sell_now > 0, (sell_now - want_sell) * data.price, -np.inf)
            i = int(np.argmax(np.maximum(excess_buy, excess_sell)))
            if excess_buy[i] < excess_sell[i]:
                _step_sell(data, s, i, -float(ls[i]))
                continue
        if s.buy[i] > 0:
            s.buy[i] = max(s.buy[i] - ls[i], 0.0)
        elif not _step_sell(data, s, i, -float(ls[i])):
            break
    return _repair_risk(data, s, trading, risk)


def _repair_risk(data: ProblemData, s: Shares, trading: CheckFn, risk: CheckFn) -> Shares:
    """Greedy single steps toward zero trade until the risk limits hold (or no step helps)."""
    ls = data.lot_size
    for _ in range(_MAX_STEPS):
        v0 = _worst_violation(risk(s.trade(data)))
        if v0 <= 0:
            return s
        best, best_v = None, v0
        for i in np.flatnonzero((s.buy > 0) | (s.lot.sum(axis=1) > 0)):
            for sign in (-1.0, 1.0):
                cand = s.copy()
                if s.buy[i] > 0:
                    cand.buy[i] = max(cand.buy[i] + sign * ls[i], 0.0)
                elif not _step_sell(data, cand, int(i), sign * float(ls[i])):
                    continue
                t = cand.trade(data)
                if _worst_violation(trading(t)) > 0:
                    continue
                v = _worst_violation(risk(t))
                if v < best_v - 1e-15:
                    best, best_v = cand, v
        if best is None:
            return s
        s = best
    return s
