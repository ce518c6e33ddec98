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


def _fill(room: Arr, rest: Arr) -> Arr:
    """Greedy fill of each row: ``room`` (m, K) in the row's order, ``rest`` (m,) > 0 to place.

    Entry ``j`` gets ``min(room_j, left_j)`` where ``left_j`` is what the earlier entries left;
    a row stops once what is left is 1e-12 or less (the first entry always takes its part).
    """
    before = np.add.accumulate(room, axis=1) - room  # np.cumsum's own ufunc, called directly
    left = rest[:, None] - before
    take = np.minimum(room, left)
    go = left > 1e-12
    go[:, 0] = True
    out: Arr = np.where(go, take, 0.0)
    return out


def _spread_rows(
    data: ProblemData, rows: np.ndarray, total: Arr, wish: Arr, cap: Arr | None = None
) -> Arr:
    """Shares of each lot of the instruments ``rows`` summing to ``total`` (m,), following
    ``wish`` (m, K): whole shares of the wished lots first, then the remainder to the lots
    wished most (ties: lowest tax) or taken back from the lots wished least (ties: highest
    tax). A total at or above everything sellable sells everything sellable. ``cap`` is
    ``_sellable(data)[rows]`` when already computed."""
    if cap is None:
        cap = _sellable(data)[rows]
    tax = data.lot_tax[rows]
    out: Arr = np.minimum(np.floor(np.minimum(wish, cap) + 1e-9), cap)
    rest = total - out.sum(axis=1)
    short = wish - out
    up = rest > 0
    if up.any():
        r = np.flatnonzero(up)
        order = np.lexsort((tax[r], -short[r]), axis=-1)
        out[r] += _fill_in_order((cap - out)[r], order, rest[r])
    down = rest < 0
    if down.any():
        r = np.flatnonzero(down)
        order = np.lexsort((-tax[r], short[r]), axis=-1)
        out[r] -= _fill_in_order(out[r], order, -rest[r])
    everything = total >= cap.sum(axis=1) - 1e-9
    out[everything] = cap[everything]
    return out


def _fill_in_order(room: Arr, order: np.ndarray, rest: Arr) -> Arr:
    """:func:`_fill` of ``room`` (m, K) visiting each row's entries in ``order`` (m, K),
    returned in the original column order."""
    # the flat positions of each row's entries in visiting order: take / put on them are
    # take_along_axis / put_along_axis without building index grids
    at = order + np.arange(0, room.size, room.shape[1])[:, None]
    out = np.zeros_like(room)
    out.put(at, _fill(room.take(at), rest))
    return out


def round_shares(data: ProblemData, t: TradeVec, min_trade_value: float) -> Shares:
    """Round the continuous trade ``t`` to shares (no repair)."""
    ls = data.lot_size
    # np.rint is np.round with no decimals (same halves-to-even) without its Python wrapper
    buy = np.rint(t.buy * data.nav / data.price / ls) * ls
    wish = t.lot_sell * data.nav / data.price[:, None]
    cap = _sellable(data)
    held = cap.sum(axis=1)
    want = wish.sum(axis=1)
    total = np.where(want >= held - ls / 2, held, np.minimum(np.rint(want / ls) * ls, held))
    lot = np.zeros_like(wish)
    rows = np.flatnonzero((want > 0) & (total > 0))
    if rows.size:
        lot[rows] = _spread_rows(data, rows, total[rows], wish[rows], cap[rows])
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
    s.lot[i] = _spread_rows(data, np.array([i]), np.array([new]), s.lot[i][None, :])[0]
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
    want: tuple[Arr, Arr] | None = None  # shares bought and sold by ``target``, when needed
    checked: TradeVec | None = None
    for _ in range(_MAX_STEPS):
        trade = s.trade(data).summed()
        bad = [c for c in trading(trade) if not c.holds()]
        if not bad:
            checked = trade  # the trade of ``s`` as it is returned to the risk repair
            break
        c = bad[0]
        if want is None:
            want = (target.buy * data.nav / data.price, target.sell * data.nav / data.price)
        want_buy, want_sell = want
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
    return _repair_risk(data, s, trading, risk, checked)


def _repair_risk(
    data: ProblemData, s: Shares, trading: CheckFn, risk: CheckFn, trade: TradeVec | None = None
) -> Shares:
    """Greedy single steps toward zero trade until the risk limits hold (or no step helps);
    ``trade`` is ``s.trade(data)`` when already computed."""
    ls = data.lot_size
    for _ in range(_MAX_STEPS):
        v0 = _worst_violation(risk(trade if trade is not None else s.trade(data)))
        trade = None
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
                t = cand.trade(data).summed()  # summed once for both checks
                if _worst_violation(trading(t)) > 0:
                    continue
                v = _worst_violation(risk(t))
                if v < best_v - 1e-15:
                    best, best_v = cand, v
        if best is None:
            return s
        s = best
    return s
