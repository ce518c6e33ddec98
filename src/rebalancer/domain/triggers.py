"""Trigger rules: every evaluation becomes a :class:`TriggerEvaluation` with inputs and verdict.

Kinds: drift threshold bands, calendar schedules, manual requests, volatility regime,
correlation change, market condition, risk-budget breach and declarative rules. Fired
evaluations of one account are coalesced into one :class:`RebalanceRequest` (highest priority,
every reason), which :func:`gate` then allows or suppresses (cooldown, market closed, open
orders), recording why.

Units: drift bands are fractions of NAV (absolute) or of the target weight (relative);
volatilities are annualised with ``periods_per_year`` (252 trading days); drawdowns are
fractions of the peak; correlation distances are in correlation units; priorities are integers,
higher is more urgent.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from rebalancer.domain.calendar import Schedule, latest_due
from rebalancer.domain.drift import DriftReport, FloatArray, RiskModel, SleeveHoldings, risk_vector
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.rules import RuleDefinition, evaluate


class TriggerKind(enum.StrEnum):
    """What kind of rule produced an evaluation."""

    THRESHOLD = "threshold"
    CALENDAR = "calendar"
    MANUAL = "manual"
    VOLATILITY_REGIME = "volatility_regime"
    CORRELATION_CHANGE = "correlation_change"
    MARKET_CONDITION = "market_condition"
    RISK_BUDGET = "risk_budget"
    RULE = "rule"


DEFAULT_PRIORITY: Mapping[TriggerKind, int] = {
    TriggerKind.MANUAL: 100,
    TriggerKind.RISK_BUDGET: 80,
    TriggerKind.MARKET_CONDITION: 70,
    TriggerKind.THRESHOLD: 60,
    TriggerKind.VOLATILITY_REGIME: 50,
    TriggerKind.RULE: 50,
    TriggerKind.CORRELATION_CHANGE: 40,
    TriggerKind.CALENDAR: 20,
}


@dataclass(frozen=True, slots=True)
class TriggerEvaluation:
    """One evaluation of one trigger rule: verdict, why, and the inputs it saw (JSON-ready).

    ``key`` is a natural key where one exists (calendar period, idempotency key, rule name).
    """

    kind: TriggerKind
    fired: bool
    reason: str
    inputs: Mapping[str, Any]
    priority: int
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "kind": str(self.kind),
            "fired": self.fired,
            "reason": self.reason,
            "inputs": dict(self.inputs),
            "priority": self.priority,
            "key": self.key,
        }


def _ev(
    kind: TriggerKind,
    fired: bool,
    reason: str,
    inputs: Mapping[str, Any],
    priority: int | None = None,
    key: str | None = None,
) -> TriggerEvaluation:
    p = DEFAULT_PRIORITY[kind] if priority is None else priority
    return TriggerEvaluation(kind, fired, reason, inputs, p, key)


# --------------------------------------------------------------------------- drift bands
SUMMARY_METRICS = ("sum_abs", "turnover", "max_abs", "tracking_error")


@dataclass(frozen=True, slots=True)
class Band:
    """A drift band.

    Attributes
    ----------
    level
        ``instrument``, ``sector``, ``asset_class``, ``sleeve`` or ``account``.
    absolute
        Fires when ``|w - w*| >= absolute`` (fraction of NAV) for some key of the level; for
        ``account`` when the summary ``metric`` reaches it.
    relative
        Fires when ``|w - w*| / w* >= relative`` for some key with ``w* > 0``.
    key
        Only this key of the level (e.g. one sector); ``None`` means every key.
    metric
        For the ``account`` level: one of ``sum_abs``, ``turnover``, ``max_abs``,
        ``tracking_error``.
    min_target
        The relative band only applies to keys whose target is at least this (fraction of
        NAV), so that tiny targets do not fire on tiny absolute drifts. 0 (default): every key
        with a positive target.
    """

    level: str
    absolute: float | None = None
    relative: float | None = None
    key: str | None = None
    metric: str = "turnover"
    priority: int = DEFAULT_PRIORITY[TriggerKind.THRESHOLD]
    min_target: float = 0.0


def evaluate_bands(report: DriftReport, bands: Sequence[Band]) -> list[TriggerEvaluation]:
    """One evaluation per band; a band fires if any of its keys is at or beyond it.

    Raises :class:`InvalidInput` for an unknown level or metric (``fields`` ``bands[i].level``).
    """
    out = []
    for i, b in enumerate(bands):
        inputs: dict[str, Any] = {
            "level": b.level,
            "absolute_band": b.absolute,
            "relative_band": b.relative,
            "key": b.key,
        }
        if b.level == "account":
            if b.metric not in SUMMARY_METRICS:
                raise InvalidInput(f"unknown metric {b.metric!r}", [f"bands[{i}].metric"])
            value = (
                report.tracking_error
                if b.metric == "tracking_error"
                else getattr(report.account, b.metric)
            )
            fired = value is not None and b.absolute is not None and value >= b.absolute
            inputs.update(metric=b.metric, value=value)
            reason = f"account {b.metric} {value} {'>=' if fired else '<'} band {b.absolute}"
            out.append(_ev(TriggerKind.THRESHOLD, fired, reason, inputs, b.priority))
            continue
        if b.level not in report.levels:
            raise InvalidInput(f"level {b.level!r} not in the drift report", [f"bands[{i}].level"])
        breaches: dict[str, dict[str, float | None]] = {}
        for key, d in report.levels[b.level].items():
            if b.key is not None and key != b.key:
                continue
            over_abs = b.absolute is not None and abs(d.absolute) >= b.absolute
            over_rel = (
                b.relative is not None
                and d.relative is not None
                and d.target >= b.min_target
                and abs(d.relative) >= b.relative
            )
            if over_abs or over_rel:
                breaches[key] = {"absolute": d.absolute, "relative": d.relative}
        inputs["breaches"] = breaches
        if breaches:
            worst = sorted(breaches, key=lambda k: -abs(breaches[k]["absolute"] or 0.0))[:5]
            parts = [f"{k} {breaches[k]['absolute']:+.4f}" for k in worst]
            reason = f"{b.level} drift beyond band: " + ", ".join(parts)
        else:
            reason = f"{b.level} drift within band"
        out.append(_ev(TriggerKind.THRESHOLD, bool(breaches), reason, inputs, b.priority))
    return out


# --------------------------------------------------------------------------- alerts
class Severity(enum.IntEnum):
    """Alert severity, ordered."""

    NONE = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Bands of |value| for each severity and the hysteresis fraction ``h``.

    A severity is raised as soon as ``|value| >= band``, and cleared only when
    ``|value| < band * (1 - h)``: a value hovering at a band does not flap.
    """

    warning: float
    critical: float
    hysteresis: float = 0.1

    def band(self, s: Severity) -> float:
        """Band of severity ``s`` (0 for ``NONE``)."""
        return {
            Severity.NONE: 0.0,
            Severity.WARNING: self.warning,
            Severity.CRITICAL: self.critical,
        }[s]


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Severity before and after one observation; ``changed`` alerts should be published."""

    previous: Severity
    current: Severity

    @property
    def changed(self) -> bool:
        """Whether the severity changed."""
        return self.previous != self.current

    @property
    def raised(self) -> bool:
        """Whether the severity went up."""
        return self.current > self.previous


def next_severity(policy: AlertPolicy, value: float, previous: Severity) -> AlertChange:
    """Severity after observing ``value`` with hysteresis (see :class:`AlertPolicy`)."""
    v = abs(value)
    raised = Severity.NONE
    for s in (Severity.WARNING, Severity.CRITICAL):
        if v >= policy.band(s):
            raised = s
    level = previous
    while level > raised and v < policy.band(level) * (1.0 - policy.hysteresis):
        level = Severity(level - 1)
    return AlertChange(previous, max(level, raised))


# --------------------------------------------------------------------------- calendar, manual
def evaluate_calendar(
    schedule: Schedule, now: datetime, last_fired_key: str | None
) -> TriggerEvaluation:
    """Fires when the latest scheduled firing's period has not fired yet (``key`` = period).

    The caller stores the key under a unique ``(account, schedule, period_key)`` constraint.
    """
    due = latest_due(schedule, now)
    inputs = {
        "schedule_id": schedule.id,
        "now": now.isoformat(),
        "last_fired_key": last_fired_key,
        "period_key": due.period_key if due else None,
        "fire_at": due.fire_at.isoformat() if due else None,
    }
    if due is None:
        return _ev(TriggerKind.CALENDAR, False, "no scheduled firing yet", inputs)
    if due.period_key == last_fired_key:
        reason = f"period {due.period_key} already fired"
        return _ev(TriggerKind.CALENDAR, False, reason, inputs, key=due.period_key)
    reason = f"{schedule.frequency} schedule {schedule.id} due for {due.period_key}"
    return _ev(TriggerKind.CALENDAR, True, reason, inputs, key=due.period_key)


def manual_trigger(
    requested_by: str, note: str, idempotency_key: str, priority: int | None = None
) -> TriggerEvaluation:
    """A manual request (from the API); ``key`` is its ``Idempotency-Key``."""
    inputs = {"requested_by": requested_by, "note": note}
    reason = f"manual request by {requested_by}" + (f": {note}" if note else "")
    return _ev(TriggerKind.MANUAL, True, reason, inputs, priority, idempotency_key)


# --------------------------------------------------------------------------- market signals
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


def evaluate_rule_trigger(
    definition: RuleDefinition, signals: Mapping[str, float]
) -> TriggerEvaluation:
    """Evaluate a declarative rule (see :mod:`rebalancer.domain.rules`) on named signals."""
    result = evaluate(definition.rule, signals)
    reason = f"rule {definition.name}: " + "; ".join(result.reasons)
    inputs = {"signals": {k: float(v) for k, v in sorted(signals.items())}}
    return _ev(TriggerKind.RULE, result.fired, reason, inputs, definition.priority, definition.name)


# --------------------------------------------------------------------------- coalescing, gates
@dataclass(frozen=True, slots=True)
class RebalanceRequest:
    """All fired triggers of one account, coalesced: highest priority, every reason."""

    account_id: str
    priority: int
    kinds: tuple[TriggerKind, ...]
    reasons: tuple[str, ...]
    evaluations: tuple[TriggerEvaluation, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "account_id": self.account_id,
            "priority": self.priority,
            "kinds": [str(k) for k in self.kinds],
            "reasons": list(self.reasons),
            "evaluations": [e.to_dict() for e in self.evaluations],
        }


def coalesce(account_id: str, evaluations: Sequence[TriggerEvaluation]) -> RebalanceRequest | None:
    """One request from the fired evaluations (``None`` if none fired).

    Evaluations are ordered by priority (highest first), then kind; reasons are de-duplicated.
    """
    fired = sorted((e for e in evaluations if e.fired), key=lambda e: (-e.priority, e.kind))
    if not fired:
        return None
    kinds = tuple(dict.fromkeys(e.kind for e in fired))
    reasons = tuple(dict.fromkeys(e.reason for e in fired))
    return RebalanceRequest(account_id, fired[0].priority, kinds, reasons, tuple(fired))


class Suppression(enum.StrEnum):
    """Why a rebalance request was held back."""

    COOLDOWN = "cooldown"
    MARKET_CLOSED = "market_closed"
    OPEN_ORDERS = "open_orders"


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether a request may start a rebalance now, and if not, every reason why not."""

    allowed: bool
    suppressed_by: tuple[Suppression, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "allowed": self.allowed,
            "suppressed_by": [str(s) for s in self.suppressed_by],
            "reasons": list(self.reasons),
        }


def gate(
    request: RebalanceRequest,
    *,
    now: datetime,
    market_open: bool,
    open_orders: int,
    last_rebalance_at: datetime | None = None,
    cooldown: timedelta = timedelta(0),
    manual_bypasses_cooldown: bool = True,
) -> GateDecision:
    """Apply cooldown and suppression to a coalesced request.

    Suppressed while the market is closed, while ``open_orders > 0`` orders of the account are
    still working, or within ``cooldown`` of the last rebalance (a manual request skips the
    cooldown unless ``manual_bypasses_cooldown`` is false). Every suppression is recorded.
    """
    why: list[tuple[Suppression, str]] = []
    manual = TriggerKind.MANUAL in request.kinds
    if (
        last_rebalance_at is not None
        and now - last_rebalance_at < cooldown
        and not (manual and manual_bypasses_cooldown)
    ):
        until = (last_rebalance_at + cooldown).isoformat()
        why.append((Suppression.COOLDOWN, f"cooldown until {until}"))
    if not market_open:
        why.append((Suppression.MARKET_CLOSED, "market closed"))
    if open_orders > 0:
        why.append((Suppression.OPEN_ORDERS, f"{open_orders} orders still open"))
    return GateDecision(not why, tuple(s for s, _ in why), tuple(r for _, r in why))
