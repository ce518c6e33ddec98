"""The household objective in NumPy (the independent re-check) and the household summaries."""

from __future__ import annotations

import numpy as np

from rebalancer.domain.model import CASH
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.household.data import Arr, HouseholdData
from rebalancer.optimizer.household.problem import HouseholdTrade
from rebalancer.optimizer.household.schemas import HouseholdDrift, HouseholdObjective
from rebalancer.optimizer.terms.base import Check, TradeVec, sigma_times


def x_after(hh: HouseholdData, trades: list[TradeVec]) -> Arr:
    """Household weights per instrument after the trades (fractions of household NAV)."""
    x = np.zeros(len(hh.ids))
    for a, t in zip(hh.accounts, trades, strict=True):
        np.add.at(x, a.idx, a.share * (a.data.w + t.z))
    return x


def household_tracking(hh: HouseholdData, x: Arr) -> float:
    """``gamma_H (x - x*)' Sigma_H (x - x*)`` from the factor form (0 without targets)."""
    if hh.target is None:
        return 0.0
    a = x - hh.target
    f = hh.load.T @ a
    return hh.gamma * float(f @ f + (hh.spec * a) @ (hh.spec * a))


def household_te(hh: HouseholdData, x: Arr) -> float:
    """Household tracking error ``sqrt((x - x*)' Sigma_H (x - x*))`` (0 without targets)."""
    if hh.target is None:
        return 0.0
    a = x - hh.target
    f = hh.load.T @ a
    return float(np.sqrt(max(float(f @ f + (hh.spec * a) @ (hh.spec * a)), 0.0)))


def household_te_check(hh: HouseholdData, trades: list[TradeVec]) -> Check:
    """The household tracking-error limit on ``trades`` (``policy.max_tracking_error``)."""
    limit = hh.te_limit if hh.te_limit is not None else float("inf")
    te = household_te(hh, x_after(hh, trades))
    return Check(
        ConstraintName.TRACKING_ERROR, ("policy.max_tracking_error",), "household", te, limit
    )


def parts(hh: HouseholdData, ht: HouseholdTrade) -> dict[str, float]:
    """Every objective term of ``ht`` (fractions of household NAV)."""
    out = dict.fromkeys(("account_tracking", "spread_and_fees", "impact", "tax", "location"), 0.0)
    for a, t in zip(hh.accounts, ht.trades, strict=True):
        d = a.data
        act = d.w + t.z - d.target
        out["account_tracking"] += (
            a.share * hh.account_weight * d.gamma * float(act @ sigma_times(d, act))
        )
        out["spread_and_fees"] += a.share * float(d.cost @ t.traded)
        out["impact"] += a.share * float(d.impact @ np.maximum(t.traded, 0.0) ** 1.5)
        out["tax"] += a.share * float(np.sum(d.lot_tax * t.lot_sell))
        out["location"] += a.share * hh.horizon * float(a.drag @ (d.w + t.z))
    out["household_tracking"] = household_tracking(hh, x_after(hh, ht.trades))
    out["transfers"] = hh.transfer_cost * float(ht.transfers.sum())
    return out


def objective(hh: HouseholdData, ht: HouseholdTrade) -> float:
    """Total household objective of ``ht`` (fraction of household NAV)."""
    return sum(parts(hh, ht).values())


def breakdown(hh: HouseholdData, p: dict[str, float]) -> HouseholdObjective:
    total = sum(p.values())
    return HouseholdObjective(total=total, total_currency=total * hh.nav, **p)


def zero_trade(hh: HouseholdData) -> HouseholdTrade:
    return HouseholdTrade(
        [TradeVec.zero(a.data.shape) for a in hh.accounts], np.zeros(len(hh.links))
    )


def drift(hh: HouseholdData, x: Arr) -> HouseholdDrift | None:
    """Household drift by instrument and asset class (None without household targets)."""
    if hh.target is None:
        return None
    d = x - hh.target
    by_inst = {i: float(d[n]) for n, i in enumerate(hh.ids)}
    by_class: dict[str, float] = {}
    for n, ac in enumerate(hh.asset_class):
        by_class[ac] = by_class.get(ac, 0.0) + float(d[n])
    cash_target = 1.0 - float(hh.target.sum())
    by_inst[CASH] = by_class[CASH] = (1.0 - float(x.sum())) - cash_target
    return HouseholdDrift(
        by_instrument=by_inst,
        by_asset_class=by_class,
        household=0.5 * sum(abs(v) for v in by_inst.values()),
    )


def location(hh: HouseholdData, trades: list[TradeVec]) -> dict[str, dict[str, float]]:
    """Asset class -> tax type -> value held (currency)."""
    out: dict[str, dict[str, float]] = {}
    for a, t in zip(hh.accounts, trades, strict=True):
        value = (a.data.w + t.z) * a.data.nav
        for n in range(a.data.n):
            row = out.setdefault(hh.asset_class[int(a.idx[n])], {})
            row[str(a.tax_type)] = row.get(str(a.tax_type), 0.0) + float(value[n])
    return out
