"""Trading constraints: cash floor, turnover, ADV caps, buy and lot bounds, wash sale."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData, Shape
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import Check, ConstraintTerm, TradeVec, Variables

_EPS = 1e-12


def _worst(checks: list[Check]) -> list[Check]:
    """All violated checks, or the tightest one when all hold (keeps answers short)."""
    bad = [c for c in checks if not c.holds()]
    return bad if bad else ([min(checks, key=lambda c: c.slack)] if checks else [])


def _vector(
    name: ConstraintName,
    fields: tuple[str, ...],
    subjects: list[str],
    values: np.ndarray,
    limits: np.ndarray,
    lower: bool = False,
) -> list[Check]:
    """Per-entity checks without building one object per entity: violators, else the tightest."""
    if not subjects:
        return []
    slack = values - limits if lower else limits - values
    tol = 1e-9 * np.maximum(1.0, np.abs(limits))
    idx = np.flatnonzero(slack < -tol)
    if idx.size == 0:
        idx = np.array([int(np.argmin(slack))])
    return [
        Check(name, fields, subjects[k], float(values[k]), float(limits[k]), lower) for k in idx
    ]


class CashFloor(ConstraintTerm):
    """Post-trade cash ``c - sum z >= max(min_cash_weight, (cash + raise_cash) / NAV)``."""

    name = ConstraintName.CASH_FLOOR

    def __init__(self, v: Variables) -> None:
        super().__init__()
        self.room = cp.Parameter(name="cash_room")
        self.constraints = [atoms.sum_(v.buy) - atoms.sum_(v.sell) <= self.room]

    def update(self, data: ProblemData) -> None:
        self.room.value = BIG if self.relaxed else data.cash / data.nav - data.cash_floor

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        after = data.cash / data.nav - float(t.z.sum())
        return [
            Check(self.name, tuple(self.fields(data)), "CASH", after, data.cash_floor, lower=True)
        ]


class Turnover(ConstraintTerm):
    """``sum_i |z_i| <= max_turnover``."""

    name = ConstraintName.TURNOVER

    def __init__(self, v: Variables) -> None:
        super().__init__()
        self.cap = cp.Parameter(nonneg=True, name="turnover_cap")
        self.constraints = [atoms.sum_(v.traded) <= self.cap]

    def update(self, data: ProblemData) -> None:
        self.cap.value = self.limit(data.turnover_limit)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        return [
            Check(
                self.name, tuple(self.fields(data)), "", float(t.traded.sum()), data.turnover_limit
            )
        ]


class AdvCap(ConstraintTerm):
    """``|z_i| <= max_adv_fraction * adv_shares_i * price_i / NAV``."""

    name = ConstraintName.ADV_CAP

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.cap = cp.Parameter(shape.n, nonneg=True, name="adv_cap")
        self.constraints = [v.traded <= self.cap]

    def update(self, data: ProblemData) -> None:
        self.cap.value = np.full(data.n, self.limit(0.0)) if self.relaxed else data.adv_cap

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = tuple(self.fields(data))
        traded = t.traded
        return _worst(
            [
                Check(self.name, f, i, float(traded[n]), float(data.adv_cap[n]))
                for n, i in enumerate(data.ids)
            ]
        )


class BuyBounds(ConstraintTerm):
    """No buys of ``no_buy``, of untargeted non-substitutes, or into a wash-sale conflict."""

    name = ConstraintName.BUY_ALLOWED
    relaxable = False

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.ub = cp.Parameter(shape.n, nonneg=True, name="buy_ub")
        self.constraints = [v.buy <= self.ub]

    def update(self, data: ProblemData) -> None:
        self.ub.value = data.buy_ub

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.no_buy", "targets")
        return _worst(
            [
                Check(self.name, f, i, float(t.buy[n]), float(data.buy_ub[n]))
                for n, i in enumerate(data.ids)
            ]
        )


class LotBounds(ConstraintTerm):
    """A lot sells at most all of itself, nothing when ``no_sell``, wash-blocked or deferred."""

    name = ConstraintName.LOT_SELL_ALLOWED
    relaxable = False

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.ub = cp.Parameter((shape.n, shape.lots_per_instrument), nonneg=True, name="lot_ub")
        self.constraints = [v.lot_sell <= self.ub]

    def update(self, data: ProblemData) -> None:
        self.ub.value = data.lot_ub

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.no_sell", "portfolio.lots")
        mask = np.array([[lot is not None for lot in row] for row in data.lot_ids])
        names = [lot for row in data.lot_ids for lot in row if lot is not None]
        return _vector(self.name, f, names, t.lot_sell[mask], data.lot_ub[mask])


class LongOnly(ConstraintTerm):
    """``w + z >= 0`` (implied by the lot bounds; checked independently)."""

    name = ConstraintName.LONG_ONLY
    relaxable = False

    def update(self, data: ProblemData) -> None:
        return None

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        post = data.w + t.z
        return _worst(
            [
                Check(self.name, (), i, float(post[n]), 0.0, lower=True)
                for n, i in enumerate(data.ids)
            ]
        )


class WashSale(ConstraintTerm):
    """No loss sale in a group bought within ``wash_sale_days``; never sell a group at a loss
    and buy into it in one recommendation. Enforced through the buy and lot bounds."""

    name = ConstraintName.WASH_SALE
    relaxable = False

    def update(self, data: ProblemData) -> None:
        return None

    def conflicts(
        self, data: ProblemData, t: TradeVec, tol: float = 1e-9
    ) -> dict[str, tuple[float, float]]:
        """Groups both sold at a loss and bought: group -> (loss weight sold, weight bought)."""
        loss = data.lot_basis > data.price[:, None]
        uniq, inv = np.unique(np.asarray(data.groups), return_inverse=True)
        sold = np.bincount(inv, weights=(t.lot_sell * loss).sum(axis=1), minlength=uniq.size)
        bought = np.bincount(inv, weights=t.buy, minlength=uniq.size)
        hit = np.flatnonzero((sold > tol) & (bought > tol))
        return {str(uniq[g]): (float(sold[g]), float(bought[g])) for g in hit}

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.wash_sale_days", "recent_buys")
        loss = data.lot_basis > data.price[:, None]
        recent = np.array([g in data.recent_groups for g in data.groups])
        refused = float((t.lot_sell * loss)[recent].sum()) if recent.any() else 0.0
        checks = [Check(self.name, f, "recent_buys", refused, 0.0)]
        checks += [
            Check(self.name, f, g, min(s, b), 0.0)
            for g, (s, b) in self.conflicts(data, t, _EPS).items()
        ]
        return _worst(checks)
