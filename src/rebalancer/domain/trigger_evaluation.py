"""What every trigger produces: the :class:`TriggerKind`, its default priority and the
:class:`TriggerEvaluation` (verdict, reason and the inputs it saw).

Priorities are integers, higher is more urgent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
