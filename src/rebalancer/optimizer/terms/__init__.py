"""Composable optimizer terms: costs (objective) and constraint groups.

Each term declares its ``cp.Parameter`` objects once, builds its expression once, updates the
parameter values per request and evaluates itself in NumPy for the independent check.
"""

from rebalancer.optimizer.terms.base import Check, ConstraintTerm, CostTerm, TradeVec, Variables
from rebalancer.optimizer.terms.constraints import (
    AdvCap,
    BuyBounds,
    CashFloor,
    LongOnly,
    LotBounds,
    Turnover,
    WashSale,
)
from rebalancer.optimizer.terms.costs import (
    ActiveRisk,
    ImpactTerm,
    SpreadFeesTerm,
    TaxTerm,
    TrackingTerm,
)
from rebalancer.optimizer.terms.risk import (
    SectorRiskShare,
    StressLimit,
    TrackingErrorLimit,
    VarLimit,
)

__all__ = [
    "ActiveRisk",
    "AdvCap",
    "BuyBounds",
    "CashFloor",
    "Check",
    "ConstraintTerm",
    "CostTerm",
    "ImpactTerm",
    "LongOnly",
    "LotBounds",
    "SectorRiskShare",
    "SpreadFeesTerm",
    "StressLimit",
    "TaxTerm",
    "TrackingErrorLimit",
    "TrackingTerm",
    "TradeVec",
    "Turnover",
    "VarLimit",
    "Variables",
    "WashSale",
]
