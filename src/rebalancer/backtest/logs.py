"""The logs one replay writes: rows of plain values, gathered into Polars frames by the runner.

Units: money in account currency, weights and objectives fractions of NAV, ``solve_ms``
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rebalancer.backtest.policies import Trigger
from rebalancer.optimizer.schemas import AnalyzeResponse

Row = dict[str, Any]


@dataclass
class AccountResult:
    """Row lists of one (policy, account) replay; every row carries ``policy`` and ``account``."""

    daily: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    realized: list[Row] = field(default_factory=list)
    decisions: list[Row] = field(default_factory=list)
    start_lots: list[Row] = field(default_factory=list)
    final_lots: list[Row] = field(default_factory=list)


def decision_row(
    day: date,
    reason: str,
    trig: Trigger | None,
    resp: AnalyzeResponse | None,
    best: float | None,
    *,
    error: str | None = None,
    ms: float = 0.0,
) -> Row:
    """One ``decisions`` row: why the optimizer was asked, its answer (``failed`` with the
    error code when it raised) and the best achievable objective when graded."""
    return {
        "date": day,
        "reason": reason,
        "graded": bool(trig and trig.grade),
        "decision": str(resp.decision) if resp is not None else "failed",
        "error": error,
        "nav": resp.nav if resp is not None else None,
        "objective_before": resp.objective_before.total if resp is not None else None,
        "objective": resp.objective.total if resp is not None else None,
        "best_objective": best,
        "net_benefit": resp.net_benefit if resp is not None else None,
        "min_net_benefit": trig.policy.min_net_benefit if trig is not None else None,
        "drift_before": resp.drift_before.account if resp is not None else None,
        "drift_after": resp.drift_after.account if resp is not None else None,
        "trades": len(resp.trades) if resp is not None else 0,
        "solve_ms": ms,
    }
