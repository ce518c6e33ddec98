"""Settling the wash-sale rule "never sell a group at a loss and buy into it in one
recommendation" (non-convex) by fixing each wash-sale group's direction.

A lot's sale is a loss when its amount realized net of selling costs is below its basis
(:func:`rebalancer.domain.wash_sale.is_wash_sale_loss`, stored as ``ProblemData.lot_loss``).
After the convex relaxation every group is settled at once (see docs/optimizer.md, "Wash
sale"): a group that both sells at a loss and buys keeps the side whose removal costs the
objective more; a group that trades on one side only keeps that side; a group that does not
trade may no longer sell at a loss. Closing a side is a bound (``buy_ub = 0`` or ``lot_ub = 0``
on its loss lots), so the re-solve is convex again, and no group can conflict in it.
"""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer.data import ProblemData
from rebalancer.optimizer.terms.base import Arr, TradeVec, sigma_times
from rebalancer.optimizer.terms.constraints import group_sides

MATERIAL = 1e-5
"""Least trade (fraction of NAV, 0.1 bp) a group counts as selling at a loss or buying when
its direction is settled."""


def _by_group(data: ProblemData, per_instrument: Arr) -> Arr:
    out = np.bincount(data.group_index, weights=per_instrument, minlength=len(data.group_names))
    return np.asarray(out, dtype=np.float64)


class _Base:
    """What both ways out of :func:`_delta` share: the answer's per-instrument sums, the
    Sigma product of its active weights and the grouping of the instruments."""

    def __init__(self, data: ProblemData, t: TradeVec) -> None:
        self.loss_now = (t.lot_sell * data.lot_loss).sum(axis=1)
        self.old_tr = t.traded
        self.lot_tax_rate = np.divide(
            (data.lot_tax * t.lot_sell * data.lot_loss).sum(axis=1),
            self.loss_now,
            out=np.zeros_like(self.loss_now),
            where=self.loss_now > 0,
        )
        self.sa = sigma_times(data, data.w + t.z - data.target)
        # one instrument per group (no wash_sale_group shared): group sums are a permutation
        self.single = len(data.group_names) == data.n
        self.order = np.argsort(data.group_index, kind="stable")
        self.starts = np.flatnonzero(np.diff(data.group_index[self.order], prepend=-1))


def _delta(data: ProblemData, t: TradeVec, b: _Base, buy: Arr, loss_sell: Arr) -> Arr:
    """Objective change per group (fraction of NAV) when, inside each group independently,
    the buys become ``buy`` and the loss-lot sales are scaled so they total ``loss_sell``
    per instrument (other lots and other groups unchanged)."""
    loss_now, old_tr = b.loss_now, b.old_tr
    dz = (buy - t.buy) - (loss_sell - loss_now)
    new_tr = np.maximum(old_tr + (buy - t.buy) + (loss_sell - loss_now), 0.0)
    inst = data.cost * (new_tr - old_tr) + data.impact * (new_tr**1.5 - old_tr**1.5)
    inst += b.lot_tax_rate * (loss_sell - loss_now)
    inst += data.gamma * (2.0 * dz * b.sa + data.specific_sd**2 * dz * dz)
    moved = data.factor_load * dz[:, None]
    if b.single:  # each group's factor exposure change is its instrument's (same values)
        out: Arr = np.empty(data.n)
        out[data.group_index] = inst + data.gamma * (moved**2).sum(axis=1)
        return out
    factor = np.add.reduceat(moved[b.order], b.starts, axis=0)
    out = _by_group(data, inst) + data.gamma * (factor**2).sum(axis=1)
    return out


def settle_all(data: ProblemData, t: TradeVec, tol: float) -> list[str]:
    """Fix the direction of every wash-sale group from the answer ``t``; return the groups
    that conflicted.

    A side counts from ``max(tol, MATERIAL)`` up (below it is an interior-point residue). A
    conflicting group (sells at a loss and buys, both counted) compares two ways out,
    each keeping the group's net trade where it can: close its loss sales (and buy that much
    less) or close its buys (and sell that much less at a loss, the sales scaled evenly). The
    way that raises the objective less is taken. A group that only sells at a loss may no
    longer buy; a group that only buys may no longer sell at a loss; a group that does not
    trade in ``t`` may no longer sell at a loss either (it could otherwise start selling at a
    loss and buying in the re-solve, once the settled groups free turnover, and need a third
    solve; see docs/optimizer.md for what that costs and saves).
    """
    sold, bought = group_sides(data, t)
    tol = max(tol, MATERIAL)
    conflict = (sold > tol) & (bought > tol)
    if conflict.any():
        g = data.group_index
        both = np.minimum(sold, bought)
        base = _Base(data, t)
        # close loss sales: no loss sells, buys cut by what those sells financed
        keep_buy = np.where(bought > 0, 1.0 - both / np.where(bought > 0, bought, 1.0), 1.0)
        close_sales = _delta(data, t, base, t.buy * keep_buy[g], np.zeros(data.n))
        # close buys: no buys, loss sells cut by what the buys replaced
        keep_sell = np.where(sold > 0, 1.0 - both / np.where(sold > 0, sold, 1.0), 1.0)
        close_buys = _delta(data, t, base, np.zeros(data.n), base.loss_now * keep_sell[g])
        no_sales = conflict & (close_sales <= close_buys)
        no_buys = conflict & ~no_sales
    else:
        no_sales = no_buys = conflict
    no_buys = no_buys | (~conflict & (sold > tol))
    no_sales = no_sales | (~conflict & (sold <= tol))  # buys only, or no trade at all
    data.buy_ub[no_buys[data.group_index]] = 0.0
    data.lot_ub[no_sales[data.group_index][:, None] & data.lot_loss] = 0.0
    return [data.group_names[k] for k in np.flatnonzero(conflict)]


def settle_by_net(data: ProblemData, t: TradeVec, tol: float) -> None:
    """Fix every group's direction by its net side in ``t`` (the fallback when the
    objective-based :func:`settle_all` made the re-solve infeasible).

    A group that sells more at a loss than it buys keeps its loss sales and may not buy;
    every other group keeps its buys and may not sell at a loss. For a group of one
    instrument this keeps its net trade, and it only ever lowers the gross trade, so ``t``
    cut down to the kept side still meets every limit on net trades (cash floor, stress,
    sector and risk limits), the turnover cap and the ADV caps: where the relaxed problem was
    feasible the re-solve is too (groups of several instruments are not guaranteed).
    """
    sold, bought = group_sides(data, t)
    sells = ((sold > tol) & (sold > bought))[data.group_index]
    data.buy_ub[sells] = 0.0
    data.lot_ub[~sells[:, None] & data.lot_loss] = 0.0


def fix_directions(data: ProblemData, t: TradeVec, tol: float) -> None:
    """Close one side of every group for good: a group that sells at a loss in ``t`` may not
    buy; every other group may not sell at a loss. The next answer cannot conflict."""
    sold, _ = group_sides(data, t)
    sells = (sold > tol)[data.group_index]
    data.buy_ub[sells] = 0.0
    data.lot_ub[~sells[:, None] & data.lot_loss] = 0.0
