"""Trigger rules: every evaluation becomes a :class:`TriggerEvaluation` with inputs and verdict.

Kinds: drift threshold bands, calendar schedules, manual requests, volatility regime,
correlation change, market condition, risk-budget breach and declarative rules. Fired
evaluations of one account are coalesced into one :class:`RebalanceRequest` (highest priority,
every reason), which :func:`gate` then allows or suppresses (cooldown, market closed, open
orders), recording why.

The evaluation type lives in :mod:`rebalancer.domain.trigger_evaluation` and the market-signal
evaluators in :mod:`rebalancer.domain.market_signals`; their names are re-exported here.

Units: drift bands are fractions of NAV (absolute) or of the target weight (relative);
volatilities are annualised with ``periods_per_year`` (252 trading days); drawdowns are
fractions of the peak; correlation distances are in correlation units; priorities are integers,
higher is more urgent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rebalancer.domain.calendar import Schedule, latest_due
from rebalancer.domain.drift import DriftReport
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.market_signals import (
    correlation_distance,
    evaluate_correlation_change,
    evaluate_market_condition,
    evaluate_risk_budget,
    evaluate_volatility_regime,
    log_returns,
    realized_vol,
)
from rebalancer.domain.rules import RuleDefinition, evaluate
from rebalancer.domain.trigger_evaluation import (
    DEFAULT_PRIORITY,
    TriggerEvaluation,
    TriggerKind,
    _ev,
)

__all__ = [
    "DEFAULT_PRIORITY",
    "SUMMARY_METRICS",
    "AlertChange",
    "AlertPolicy",
    "Band",
    "GateDecision",
    "RebalanceRequest",
    "Severity",
    "Suppression",
    "TriggerEvaluation",
    "TriggerKind",
    "coalesce",
    "correlation_distance",
    "evaluate_bands",
    "evaluate_calendar",
    "evaluate_correlation_change",
    "evaluate_market_condition",
    "evaluate_risk_budget",
    "evaluate_rule_trigger",
    "evaluate_volatility_regime",
    "gate",
    "log_returns",
    "manual_trigger",
    "next_severity",
    "realized_vol",
]


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


# --------------------------------------------------------------------------- declarative rules
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
