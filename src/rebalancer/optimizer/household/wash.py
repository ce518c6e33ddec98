"""The wash-sale rule across a household.

A sale at a loss in a **taxable** account and a buy of the same wash-sale group in **any**
account of the household (a spouse's, an IRA's) within the window wash the loss; when the buy
is in a tax-deferred or tax-exempt account the loss is not even deferred into the new shares'
basis: it is lost for good. So one household recommendation never both sells a group at a loss
in a taxable account and buys that group anywhere (recent buys and recent loss sales are
handled in :func:`rebalancer.optimizer.household.data.build_household`). A sale is at a loss
when its amount realized net of selling costs is below the basis
(:func:`rebalancer.domain.wash_sale.is_wash_sale_loss`, as ``ProblemData.lot_loss``).
"""

from __future__ import annotations

import numpy as np

from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.household.data import HouseholdData
from rebalancer.optimizer.terms.base import Check, TradeVec

FIELDS = ("recent_loss_sales", "policy.wash_sale_days")


def conflicts(
    hh: HouseholdData, trades: list[TradeVec], tol: float = 1e-9
) -> dict[str, tuple[float, float]]:
    """Groups sold at a loss in a taxable account and bought anywhere:
    group -> (loss value sold, value bought), both fractions of household NAV."""
    sold: dict[str, float] = {}
    bought: dict[str, float] = {}
    for a, t in zip(hh.accounts, trades, strict=True):
        d = a.data
        if a.taxable:
            loss = d.lot_loss
            per = (t.lot_sell * loss).sum(axis=1) * a.share
            for n in np.flatnonzero(per > 0):
                sold[d.groups[n]] = sold.get(d.groups[n], 0.0) + float(per[n])
        for n in np.flatnonzero(t.buy > 0):
            bought[d.groups[n]] = bought.get(d.groups[n], 0.0) + float(t.buy[n]) * a.share
    return {
        g: (s, bought[g]) for g, s in sorted(sold.items()) if s > tol and bought.get(g, 0.0) > tol
    }


def settle(hh: HouseholdData, found: dict[str, tuple[float, float]], last: bool) -> None:
    """Per conflicting group keep the larger side: forbid its loss sales in every taxable
    account when more is bought than sold at a loss (always on the last round), else forbid
    its buys in every account."""
    no_loss = {g for g, (sold, bought) in found.items() if bought >= sold or last}
    no_buy = set(found) - no_loss
    for a in hh.accounts:
        d = a.data
        groups = np.asarray(d.groups)
        if a.taxable and no_loss:
            d.lot_ub[np.isin(groups, list(no_loss))[:, None] & d.lot_loss] = 0.0
        if no_buy:
            d.buy_ub[np.isin(groups, list(no_buy))] = 0.0


def fix_directions(hh: HouseholdData, trades: list[TradeVec]) -> None:
    """Close one side of every group for good: groups sold at a loss anywhere may not be
    bought; every other group may not be sold at a loss."""
    selling = {
        a.data.groups[n]
        for a, t in zip(hh.accounts, trades, strict=True)
        if a.taxable
        for n in np.flatnonzero((t.lot_sell * a.data.lot_loss).sum(axis=1) > 1e-7)
    }
    for a in hh.accounts:
        d = a.data
        sells = np.array([g in selling for g in d.groups])
        d.buy_ub[sells] = 0.0
        if a.taxable:
            d.lot_ub[~sells[:, None] & d.lot_loss] = 0.0


def lock_sides(hh: HouseholdData, trades: list[TradeVec], tol: float) -> None:
    """Keep the sides a solve chose, so settling needs one more solve, not a chain of them:
    a group bought (more than ``tol``, fraction of household NAV) and not sold at a loss may
    not be sold at a loss; a group sold at a loss and not bought may not be bought. Groups the
    solve left alone stay open; conflicting groups are left to :func:`settle`."""
    sold: set[str] = set()
    bought: set[str] = set()
    for a, t in zip(hh.accounts, trades, strict=True):
        d = a.data
        if a.taxable:
            per = (t.lot_sell * d.lot_loss).sum(axis=1) * a.share
            sold |= {d.groups[n] for n in np.flatnonzero(per > tol)}
        bought |= {d.groups[n] for n in np.flatnonzero(t.buy * a.share > tol)}
    for a in hh.accounts:
        d = a.data
        only_sold = np.array([g in sold and g not in bought for g in d.groups], dtype=bool)
        only_bought = np.array([g in bought and g not in sold for g in d.groups], dtype=bool)
        d.buy_ub[only_sold] = 0.0
        if a.taxable:
            d.lot_ub[only_bought[:, None] & d.lot_loss] = 0.0


def check(hh: HouseholdData, trades: list[TradeVec]) -> list[Check]:
    """The household rule in NumPy: one check per conflicting group (or one passing check)."""
    found = conflicts(hh, trades, 1e-12)
    if not found:
        return [Check(ConstraintName.WASH_SALE, FIELDS, "household", 0.0, 0.0)]
    return [
        Check(ConstraintName.WASH_SALE, FIELDS, f"household:{g}", min(s, b), 0.0)
        for g, (s, b) in found.items()
    ]
