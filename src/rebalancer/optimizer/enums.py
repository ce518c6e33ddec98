"""Enumerations used across the optimizer (no magic strings)."""

from __future__ import annotations

import enum


class Decision(enum.StrEnum):
    """Outcome of one analysis."""

    REBALANCE = "rebalance"
    NO_TRADE = "no_trade"


class Side(enum.StrEnum):
    """Direction of a trade."""

    BUY = "buy"
    SELL = "sell"


class Term(enum.StrEnum):
    """Holding-period class of a realized gain."""

    SHORT = "short"
    LONG = "long"


class Reason(enum.StrEnum):
    """Why a trade is in a recommendation."""

    DRIFT_REMOVED = "drift_removed"
    LOSS_HARVESTED = "loss_harvested"
    CASH_RAISED = "cash_raised"
    RISK_REDUCED = "risk_reduced"
    SUBSTITUTE = "substitute"
    CONSTRAINT = "constraint"


class SolverName(enum.StrEnum):
    """Steps of the solver fallback chain, in order.

    ``FAST`` is the structure-exploiting JAX interior-point solver
    (:mod:`rebalancer.optimizer.fast`);
    the conic solvers after it are the reference and the fallback.
    """

    FAST = "FAST"
    CLARABEL = "CLARABEL"
    SCS = "SCS"
    HEURISTIC = "HEURISTIC"


class SolveStatus(enum.StrEnum):
    """Normalized solver outcome."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    FAILED = "failed"
    HEURISTIC = "heuristic"


class ConstraintName(enum.StrEnum):
    """Every constraint the optimizer enforces; values are stable identifiers in responses."""

    CASH_FLOOR = "cash_floor"
    TURNOVER = "turnover"
    ADV_CAP = "adv_cap"
    BUY_ALLOWED = "buy_allowed"
    LOT_SELL_ALLOWED = "lot_sell_allowed"
    LONG_ONLY = "long_only"
    WASH_SALE = "wash_sale"
    VAR = "var"
    TRACKING_ERROR = "tracking_error"
    STRESS = "stress"
    SECTOR_RISK_SHARE = "sector_risk_share"
