"""Trading constraints: cash floor, turnover, ADV caps, buy and lot bounds, wash sale."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from rebalancer.optimizer.data import BIG, ProblemData, Shape
from rebalancer.optimizer.enums import ConstraintName
from rebalancer.optimizer.terms import atoms
from rebalancer.optimizer.terms.base import (
    Check,
    ConstraintTerm,
    TradeVec,
    Variables,
    exact_row_sum,
    set_param,
    within,
)

_EPS = 1e-12


_LOOSEST_NEG_TOL = -1e-9
"""The largest negated tolerance of :meth:`Check.holds` for any limit: ``-1e-9 * m`` with
``m = max(1, |limit|) >= 1`` is at most ``-1e-9`` (rounding is monotone)."""


def _slack(values: np.ndarray, limits: np.ndarray | None, lower: bool) -> np.ndarray:
    """Slack of each entry (``limits`` ``None`` stands for all zero: the slack is then
    ``values`` or ``-values``, as ``0 - v`` is ``-v``)."""
    if limits is None:
        return values if lower else -values
    slack: np.ndarray = values - limits if lower else limits - values
    return slack


def _neg_tol(limits: np.ndarray | None) -> np.ndarray | float:
    """:meth:`Check.holds`'s tolerance negated, ``-1e-9 * max(1, |limit|)`` (the same floats
    as there: negation and the product are exact in either order)."""
    if limits is None:
        return _LOOSEST_NEG_TOL
    neg_tol: np.ndarray = np.abs(limits)
    np.maximum(neg_tol, 1.0, out=neg_tol)
    neg_tol *= -1e-9
    return neg_tol


def _vector(
    name: ConstraintName,
    fields: tuple[str, ...],
    subjects: list[str],
    values: np.ndarray,
    limits: np.ndarray | None,
    lower: bool = False,
) -> list[Check]:
    """Per-entity checks without building one object per entity: violators, else the tightest.
    ``limits`` ``None``: every limit is zero."""
    if not subjects:
        return []
    slack = _slack(values, limits, lower)
    tightest = int(slack.argmin())  # the first NaN if any (then the comparison is False)
    if slack[tightest] >= _LOOSEST_NEG_TOL:
        # every slack is at least the loosest tolerance, so none fails whatever its limit:
        # no per-limit tolerances needed (the usual case of a solver's answer)
        idx: tuple[int, ...] | np.ndarray = (tightest,)
    else:
        bad = slack < _neg_tol(limits)
        idx = bad.nonzero()[0] if bad.any() else (tightest,)
    return [
        Check(
            name,
            fields,
            subjects[k],
            float(values[k]),
            0.0 if limits is None else float(limits[k]),
            lower,
        )
        for k in idx
    ]


def _vector_holds(values: np.ndarray, limits: np.ndarray | None, lower: bool = False) -> bool:
    """Whether :func:`_vector` of these values finds no check that fails :meth:`Check.holds`
    (the same floats; ``False`` also for NaN or no entries, where the full checks decide)."""
    if values.size == 0:
        return False
    slack = _slack(values, limits, lower)
    # the loosest tolerance first (see _vector): per-limit tolerances only when it fails
    return bool(slack.min() >= _LOOSEST_NEG_TOL) or bool((slack >= _neg_tol(limits)).all())


def group_sides(data: ProblemData, t: TradeVec) -> tuple[np.ndarray, np.ndarray]:
    """Per wash-sale group (``data.group_names`` order): weight sold at a loss (see
    :func:`rebalancer.domain.wash_sale.is_wash_sale_loss`) and weight bought (fractions of
    NAV)."""
    m = len(data.group_names)
    sold = np.bincount(
        data.group_index, weights=exact_row_sum(t.lot_sell * data.lot_loss), minlength=m
    )
    bought = np.bincount(data.group_index, weights=t.buy, minlength=m)
    return sold, bought


def recent_mask(data: ProblemData) -> np.ndarray:
    """Instruments whose wash-sale group was bought within ``wash_sale_days`` (bool, (n,))."""
    if not data.recent_groups:
        return np.zeros(data.n, dtype=bool)
    hit = np.fromiter(
        (g in data.recent_groups for g in data.group_names), bool, len(data.group_names)
    )
    out: np.ndarray = hit[data.group_index]  # a lookup, not np.isin's sort (same mask)
    return out


class CashFloor(ConstraintTerm):
    """Post-trade cash ``c - sum z >= max(min_cash_weight, (cash + raise_cash) / NAV)``."""

    name = ConstraintName.CASH_FLOOR

    def __init__(self, v: Variables) -> None:
        super().__init__()
        self.room = cp.Parameter(name="cash_room")
        self.constraints = [atoms.sum_(v.buy) - atoms.sum_(v.sell) <= self.room]

    def update(self, data: ProblemData) -> None:
        set_param(self.room, BIG if self.relaxed else data.cash / data.nav - data.cash_floor)

    @staticmethod
    def _after(data: ProblemData, t: TradeVec) -> float:
        """Post-trade cash weight."""
        return data.cash / data.nav - float(t.z.sum())

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        after = self._after(data, t)
        return [
            Check(self.name, tuple(self.fields(data)), "CASH", after, data.cash_floor, lower=True)
        ]

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return within(self._after(data, t), data.cash_floor, lower=True)


class Turnover(ConstraintTerm):
    """``sum_i |z_i| <= max_turnover``."""

    name = ConstraintName.TURNOVER

    def __init__(self, v: Variables) -> None:
        super().__init__()
        self.cap = cp.Parameter(nonneg=True, name="turnover_cap")
        self.constraints = [atoms.sum_(v.traded) <= self.cap]

    def update(self, data: ProblemData) -> None:
        set_param(self.cap, self.limit(data.turnover_limit))

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        return [
            Check(
                self.name, tuple(self.fields(data)), "", float(t.traded.sum()), data.turnover_limit
            )
        ]

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return within(float(t.traded.sum()), data.turnover_limit)


class AdvCap(ConstraintTerm):
    """``|z_i| <= max_adv_fraction * adv_shares_i * price_i / NAV``."""

    name = ConstraintName.ADV_CAP

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.cap = cp.Parameter(shape.n, nonneg=True, name="adv_cap")
        self.constraints = [v.traded <= self.cap]

    def update(self, data: ProblemData) -> None:
        if self.relaxed:
            set_param(self.cap, np.full(data.n, self.limit(0.0)))
        else:
            set_param(self.cap, data.adv_cap, fixed=True)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        return _vector(self.name, tuple(self.fields(data)), data.ids, t.traded, data.adv_cap)

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return not data.ids or _vector_holds(t.traded, data.adv_cap)


class BuyBounds(ConstraintTerm):
    """No buys of ``no_buy``, of untargeted non-substitutes, or into a wash-sale conflict."""

    name = ConstraintName.BUY_ALLOWED
    relaxable = False

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.ub = cp.Parameter(shape.n, nonneg=True, name="buy_ub")
        self.constraints = [v.buy <= self.ub]

    def update(self, data: ProblemData) -> None:
        set_param(self.ub, data.buy_ub)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.no_buy", "targets")
        return _vector(self.name, f, data.ids, t.buy, data.buy_ub)

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return not data.ids or _vector_holds(t.buy, data.buy_ub)


class LotBounds(ConstraintTerm):
    """A lot sells at most all of itself, nothing when ``no_sell``, wash-blocked or deferred."""

    name = ConstraintName.LOT_SELL_ALLOWED
    relaxable = False

    def __init__(self, shape: Shape, v: Variables) -> None:
        super().__init__()
        self.ub = cp.Parameter((shape.n, shape.lots_per_instrument), nonneg=True, name="lot_ub")
        self.constraints = [v.lot_sell <= self.ub]

    def update(self, data: ProblemData) -> None:
        set_param(self.ub, data.lot_ub)

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.no_sell", "portfolio.lots")
        mask = data.lot_present
        return _vector(self.name, f, data.lot_names, t.lot_sell[mask], data.lot_ub[mask])

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        # the empty lot slots too (a zero bound): stricter than the present lots alone, so a
        # True is still exact; a trade in an empty slot gives False and check() decides
        return not data.lot_names or _vector_holds(t.lot_sell, data.lot_ub)


class LongOnly(ConstraintTerm):
    """``w + z >= 0`` (implied by the lot bounds; checked independently)."""

    name = ConstraintName.LONG_ONLY
    relaxable = False

    def update(self, data: ProblemData) -> None:
        return None

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        post = t.post(data.w)
        # an instrument sold out (every lot sold in full, nothing bought) holds exactly 0: ``w``
        # sums the lots in another order than ``z``, which leaves -1e-17 or so that the
        # answer's constraint list would show as a negative slack
        emptied = (t.buy == 0) & (data.w > 0) & (t.lot_sell == data.lot_w).all(axis=1)
        if emptied.any():
            post = np.where(emptied, 0.0, post)
        return _vector(self.name, (), data.ids, post, None, lower=True)

    def clearly_holds(self, data: ProblemData, t: TradeVec) -> bool:
        return not data.ids or _vector_holds(t.post(data.w), None, lower=True)


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
        sold, bought = group_sides(data, t)
        hit = np.flatnonzero((sold > tol) & (bought > tol))
        return {data.group_names[g]: (float(sold[g]), float(bought[g])) for g in hit}

    def check(self, data: ProblemData, t: TradeVec) -> list[Check]:
        f = ("policy.wash_sale_days", "recent_buys")
        recent = recent_mask(data)
        refused = float((t.lot_sell * data.lot_loss)[recent].sum()) if recent.any() else 0.0
        found = self.conflicts(data, t, _EPS)
        if not found:  # what _vector gives for the one entry, without its arrays
            return [Check(self.name, f, "recent_buys", refused, 0.0)]
        subjects = ["recent_buys", *found]
        values = np.array([refused, *(min(s, b) for s, b in found.values())])
        return _vector(self.name, f, subjects, values, None)
