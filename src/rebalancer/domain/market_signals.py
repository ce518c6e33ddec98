"""Market-signal triggers: volatility regime, correlation change, market condition and
risk-budget breach, each a :class:`~rebalancer.domain.trigger_evaluation.TriggerEvaluation`.

Units: volatilities are annualised with ``periods_per_year`` (252 trading days); drawdowns are
fractions of the peak; correlation distances are in correlation units; risk budgets are in the
risk model's (annualised) units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rebalancer.domain.drift import FloatArray, RiskModel, SleeveHoldings, risk_vector
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.trigger_evaluation import TriggerEvaluation, TriggerKind, _ev


def log_returns(prices: FloatArray) -> FloatArray:
    """Log returns along axis 0 of positive prices (t,) or (t, n)."""
    p = np.asarray(prices, dtype=np.float64)
    if p.shape[0] < 2 or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise InvalidInput("need at least two finite, positive prices", ["prices"])
    out: FloatArray = np.diff(np.log(p), axis=0)
    return out


def realized_vol(returns: FloatArray, periods_per_year: int = 252) -> float:
    """Annualised sample standard deviation of periodic returns."""
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year)) if len(returns) > 1 else 0.0


def evaluate_volatility_regime(
    prices: FloatArray,
    *,
    short_window: int = 20,
    long_window: int = 250,
    ratio_threshold: float = 1.5,
    periods_per_year: int = 252,
) -> TriggerEvaluation:
    """Fires when short-window realized vol / long-window realized vol >= ``ratio_threshold``."""
    r = log_returns(prices)
    inputs: dict[str, Any] = {
        "short_window": short_window,
        "long_window": long_window,
        "ratio_threshold": ratio_threshold,
        "observations": len(r),
    }
    if len(r) < long_window or short_window < 2:
        return _ev(TriggerKind.VOLATILITY_REGIME, False, "insufficient price history", inputs)
    short = realized_vol(r[-short_window:], periods_per_year)
    long = realized_vol(r[-long_window:], periods_per_year)
    ratio = short / long if long > 0 else math.inf if short > 0 else 1.0
    fired = ratio >= ratio_threshold
    inputs.update(short_vol=short, long_vol=long, ratio=ratio if math.isfinite(ratio) else None)
    reason = f"short vol {short:.4f} / long vol {long:.4f} = {ratio:.3g} " + (
        f">= {ratio_threshold:g}" if fired else f"< {ratio_threshold:g}"
    )
    return _ev(TriggerKind.VOLATILITY_REGIME, fired, reason, inputs)


def correlation_distance(a: FloatArray, b: FloatArray) -> float:
    """Root mean square difference of the off-diagonal entries of two correlation matrices."""
    n = a.shape[0]
    if a.shape != b.shape or a.shape != (n, n):
        raise InvalidInput(f"correlation shapes {a.shape} and {b.shape} differ", ["reference"])
    if n < 2:
        return 0.0
    mask = ~np.eye(n, dtype=bool)
    return float(np.sqrt(np.mean((a[mask] - b[mask]) ** 2)))


def evaluate_correlation_change(
    prices: FloatArray, reference: FloatArray, *, window: int = 60, threshold: float = 0.2
) -> TriggerEvaluation:
    """Fires when the rolling correlation of the last ``window`` returns is ``threshold`` or
    more (RMS off-diagonal, see :func:`correlation_distance`) away from ``reference``.

    ``prices`` has shape (t, n); constant series get zero correlation with everything else.
    """
    r = log_returns(prices)
    inputs: dict[str, Any] = {"window": window, "threshold": threshold}
    if r.ndim != 2 or len(r) < max(window, 3):
        return _ev(TriggerKind.CORRELATION_CHANGE, False, "insufficient price history", inputs)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(r[-window:].T)
    corr = np.atleast_2d(np.nan_to_num(corr, nan=0.0))
    np.fill_diagonal(corr, 1.0)
    dist = correlation_distance(corr, np.asarray(reference, dtype=np.float64))
    fired = dist >= threshold
    inputs["distance"] = dist
    reason = f"correlation distance {dist:.4f} {'>=' if fired else '<'} {threshold:g}"
    return _ev(TriggerKind.CORRELATION_CHANGE, fired, reason, inputs)


def evaluate_market_condition(
    index_prices: FloatArray,
    *,
    drawdown_threshold: float = 0.10,
    vol_index: float | None = None,
    vol_index_threshold: float | None = None,
) -> TriggerEvaluation:
    """Fires on an index drawdown from its peak >= ``drawdown_threshold`` (fraction) or a
    volatility-index level (e.g. VIX points) >= ``vol_index_threshold``."""
    p = np.asarray(index_prices, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise InvalidInput("index prices must be finite and positive", ["index_prices"])
    drawdown = float(1.0 - p[-1] / p.max())
    vol_hit = (
        vol_index is not None
        and vol_index_threshold is not None
        and vol_index >= vol_index_threshold
    )
    reasons = []
    if drawdown >= drawdown_threshold:
        reasons.append(f"index drawdown {drawdown:.2%} >= {drawdown_threshold:.2%}")
    if vol_hit:
        reasons.append(f"volatility index {vol_index:g} >= {vol_index_threshold:g}")
    inputs = {
        "drawdown": drawdown,
        "drawdown_threshold": drawdown_threshold,
        "vol_index": vol_index,
        "vol_index_threshold": vol_index_threshold,
    }
    reason = "; ".join(reasons) or f"index drawdown {drawdown:.2%}, no stress"
    return _ev(TriggerKind.MARKET_CONDITION, bool(reasons), reason, inputs)


def evaluate_risk_budget(
    weights: Mapping[str, float],
    risk_model: RiskModel,
    *,
    targets: Mapping[str, float] | None = None,
    vol_budget: float | None = None,
    te_budget: float | None = None,
    sleeves: Sequence[SleeveHoldings] = (),
    contribution_tolerance: float = 0.0,
) -> TriggerEvaluation:
    """Fires when ex-ante volatility > ``vol_budget``, tracking error to ``targets`` >
    ``te_budget``, or a sleeve's share of portfolio variance exceeds its NAV share by more than
    ``contribution_tolerance`` (fraction). Volatilities in the risk model's (annualised) units.
    """
    w = risk_vector(weights, risk_model)
    marginal = risk_model.cov_rows(w[None, :])[0]
    var = float(w @ marginal)
    vol = math.sqrt(max(var, 0.0))
    inputs: dict[str, Any] = {"ex_ante_vol": vol, "vol_budget": vol_budget, "te_budget": te_budget}
    reasons = []
    if vol_budget is not None and vol > vol_budget:
        reasons.append(f"ex-ante vol {vol:.4f} > budget {vol_budget:.4f}")
    if targets is not None:
        a = w - risk_vector(targets, risk_model)
        te = math.sqrt(max(float(risk_model.quad_form_rows(a[None, :])[0]), 0.0))
        inputs["tracking_error"] = te
        if te_budget is not None and te > te_budget:
            reasons.append(f"tracking error {te:.4f} > budget {te_budget:.4f}")
    contributions: dict[str, float] = {}
    for s in sleeves:
        share_of_var = (
            float(risk_vector(s.current, risk_model) @ marginal) / var if var > 0 else 0.0
        )
        contributions[s.sleeve.id] = share_of_var
        if share_of_var > s.sleeve.share * (1.0 + contribution_tolerance):
            reasons.append(
                f"sleeve {s.sleeve.id} risk contribution {share_of_var:.2%} "
                f"> share {s.sleeve.share:.2%}"
            )
    inputs["sleeve_contributions"] = contributions
    reason = "; ".join(reasons) or "within risk budget"
    return _ev(TriggerKind.RISK_BUDGET, bool(reasons), reason, inputs)
