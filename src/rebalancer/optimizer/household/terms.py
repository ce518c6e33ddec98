"""One account's terms inside a household, evaluated in NumPy (the independent re-check).

The solver sees the stacked problem (:mod:`rebalancer.optimizer.household.problem`); each
account's answer is checked against the single-account constraint classes, built here on the
account's own (small, never compiled) variables, so the re-check shares no code path with the
stacked formulation.
"""

from __future__ import annotations

from rebalancer.optimizer.data import BIG, ProblemData
from rebalancer.optimizer.terms.base import Check, ConstraintTerm, CostTerm, TradeVec, Variables
from rebalancer.optimizer.terms.constraints import (
    AdvCap,
    BuyBounds,
    CashFloor,
    LongOnly,
    LotBounds,
    Turnover,
)
from rebalancer.optimizer.terms.costs import (
    ActiveRisk,
    ImpactTerm,
    SpreadFeesTerm,
    TaxTerm,
    TrackingTerm,
)
from rebalancer.optimizer.terms.risk import StressLimit, TrackingErrorLimit, VarLimit


class AccountTerms:
    """The single-account term classes of one account (NumPy ``value`` and ``check`` only)."""

    def __init__(self, data: ProblemData) -> None:
        shape = data.shape
        self.k = shape.lots_per_instrument
        v = Variables(shape)
        risk = ActiveRisk(shape, v)
        self.costs: list[CostTerm] = [
            TrackingTerm(risk),
            SpreadFeesTerm(shape, v),
            ImpactTerm(shape, v),
            TaxTerm(shape, v),
        ]
        self.limits: list[ConstraintTerm] = [
            CashFloor(v),
            Turnover(v),
            AdvCap(shape, v),
            BuyBounds(shape, v),
            LotBounds(shape, v),
            LongOnly(),
        ]
        if data.te_limit < BIG:
            self.limits.append(TrackingErrorLimit(risk))
        if data.var_limit < BIG:
            self.limits.append(VarLimit(shape, risk))
        if shape.scenarios:
            self.limits.append(StressLimit(shape, v))

    def parts(self, data: ProblemData, t: TradeVec) -> dict[str, float]:
        """Account-level terms in fractions of the account NAV (unscaled, as one account)."""
        return {c.label: c.value(data, t) for c in self.costs}

    def checks(self, data: ProblemData, t: TradeVec, only: tuple[type, ...] = ()) -> list[Check]:
        """Every per-account constraint in NumPy; ``data.cash`` must include net transfers."""
        out: list[Check] = []
        for term in self.limits:
            if not only or isinstance(term, only):
                out += term.check(data, t)
        return out
