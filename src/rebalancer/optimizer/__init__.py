"""Recommendation engine: one convex optimization over trades and tax lots.

Public API
----------
analyze(request) -> AnalyzeResponse
    One-shot analysis with a process-wide :class:`Recommender`.
Recommender(solvers=..., cache_size=...)
    Holds compiled problems keyed by shape; reuse one per worker process.
"""

from __future__ import annotations

from rebalancer.optimizer.engine import DEFAULT_CHAIN, FAST_CHAIN, Recommender
from rebalancer.optimizer.enums import (
    ConstraintName,
    Decision,
    Reason,
    Side,
    SolverName,
    SolveStatus,
    Term,
)
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

_DEFAULT: Recommender | None = None


def default_recommender() -> Recommender:
    """The process-wide recommender used by :func:`analyze` (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Recommender()
    return _DEFAULT


def analyze(request: AnalyzeRequest) -> AnalyzeResponse:
    """Recommend trades for one account (``POST /v1/analyze``).

    Parameters
    ----------
    request
        Portfolio, targets, market data, risk model and policy.

    Returns
    -------
    AnalyzeResponse
        Decision, trades with lots and explanations, objective, drift, risk, tax, constraint
        slacks and the solver path.

    Raises
    ------
    rebalancer.domain.errors.InvalidInput
        A rule relating several request fields is broken (``fields`` names them).
    rebalancer.domain.errors.InfeasibleRebalance
        The limits conflict; ``detail`` gives the numbers and ``fields`` the limits.
    rebalancer.domain.errors.ValidationFailed
        The independent NumPy re-check of the rounded answer failed.
    """
    return default_recommender().analyze(request)


__all__ = [
    "DEFAULT_CHAIN",
    "FAST_CHAIN",
    "AnalyzeRequest",
    "AnalyzeResponse",
    "ConstraintName",
    "Decision",
    "Reason",
    "Recommender",
    "Side",
    "SolveStatus",
    "SolverName",
    "Term",
    "analyze",
    "default_recommender",
]
