"""Performance monitoring of the live service, computed from stored data (pure functions).

The data comes from :class:`rebalancer.adapters.repositories.performance.PerformanceRepository`;
these functions only compute. Definitions match the backtest's (docs/backtesting.md):

- **average drift**: mean over accounts of the newest drift snapshot's account drift (half the
  sum of ``|w - w*|``, fraction of NAV); target < 2 %.
- **share of optimal decisions**: among recent recommendations, re-solved by the optimizer,
  the share with ``f(decision) - f* <= 0.005 (f(0) - f*) + min_net_benefit / NAV`` where
  ``f*`` is the best achievable objective (least of no trade, the decision, and the answer
  without the net-benefit gate and minimum trade value); target > 90 %.
- **successful executions**: filled orders / orders in a terminal state (filled, cancelled,
  rejected, expired); target > 95 %.
- **effectiveness**: drift removed (fraction of NAV) per basis point of estimated spread +
  impact cost, over executed (``rebalance``) recommendations.
- **attribution**: P&L of the rebalancing fills against holding instead (buy-and-hold of the
  pre-trade holdings): sum over fills of ``sign * quantity * (last price - fill price)``, in
  currency; positive means the trades added return.
- **cost analysis**: estimated spread + fees, impact and tax of executed recommendations
  (currency and bps of the traded value) against the realized cost of the fills
  (implementation shortfall against arrival prices, currency and bps of the filled value).
- **band sweep** (frequency analysis): for each absolute band width, the drift snapshots at or
  beyond it and how often an account *entered* it (a snapshot at or beyond the width after
  one below it, or the account's first one), per account per 30 days: how often a band of
  that width would fire on the drift actually observed. The what-if with the rebalances such
  a band would make is the backtest's cost-vs-drift frontier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rebalancer.domain.errors import RebalancerError
from rebalancer.optimizer.schemas import AnalyzeRequest, AnalyzeResponse

AVERAGE_DRIFT_TARGET = 0.02
OPTIMAL_SHARE_TARGET = 0.90
SUCCESSFUL_EXECUTION_TARGET = 0.95
SWEEP_BAND_WIDTHS = (0.01, 0.02, 0.03, 0.05, 0.10)
"""Absolute band widths (fractions of NAV) of the frequency analysis."""
OPTIMAL_TOLERANCE = 0.005
TERMINAL_ORDER_STATUSES = ("filled", "cancelled", "rejected", "expired")


class Analyzer(Protocol):
    """The optimizer, as far as grading needs it."""

    def analyze(self, request: AnalyzeRequest) -> AnalyzeResponse: ...


def is_optimal(
    objective: float, objective_before: float, best: float, min_net_benefit: float, nav: float
) -> bool:
    """Whether a decision is within 0.5 % of the best achievable objective (module docstring).

    Objectives are fractions of NAV; ``min_net_benefit`` is currency.
    """
    slack = OPTIMAL_TOLERANCE * abs(objective_before - best)
    return objective - best <= slack + min_net_benefit / max(nav, 1e-12) + 1e-12


def grade(request: AnalyzeRequest, response: AnalyzeResponse, optimizer: Analyzer) -> bool | None:
    """Re-solve ``request`` without the gate and grade ``response`` (None if it cannot)."""
    free = request.model_copy(
        update={
            "policy": request.policy.model_copy(
                update={"min_net_benefit": 0.0, "min_trade_value": 0.0}
            )
        }
    )
    try:
        alt = optimizer.analyze(free).objective.total
    except RebalancerError:
        return None
    best = min(alt, response.objective.total, response.objective_before.total)
    return is_optimal(
        response.objective.total,
        response.objective_before.total,
        best,
        request.policy.min_net_benefit,
        response.nav,
    )


@dataclass(frozen=True, slots=True)
class Metric:
    """One success metric: its value (None without data), target, and whether it is met."""

    value: float | None
    target: float
    met: bool | None
    sample: int


def _metric(value: float | None, target: float, below: bool, sample: int) -> Metric:
    met = None if value is None else (value < target if below else value > target)
    return Metric(value, target, met, sample)


def average_drift(latest: Mapping[str, float]) -> Metric:
    """Mean account drift over accounts (fraction of NAV)."""
    vals = list(latest.values())
    return _metric(sum(vals) / len(vals) if vals else None, AVERAGE_DRIFT_TARGET, True, len(vals))


def optimal_share(grades: Sequence[bool | None]) -> Metric:
    """Share of graded decisions that are optimal (ungradable ones are left out)."""
    g = [x for x in grades if x is not None]
    return _metric(sum(g) / len(g) if g else None, OPTIMAL_SHARE_TARGET, False, len(g))


def successful_executions(statuses: Mapping[str, int]) -> Metric:
    """Filled orders over orders in a terminal state."""
    done = sum(statuses.get(s, 0) for s in TERMINAL_ORDER_STATUSES)
    value = statuses.get("filled", 0) / done if done else None
    return _metric(value, SUCCESSFUL_EXECUTION_TARGET, False, done)


def effectiveness(responses: Sequence[Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Drift removed per bp of estimated cost over stored ``rebalance`` responses (JSON)."""
    removed, cost_frac, cost_ccy, n = 0.0, 0.0, 0.0, 0
    for r in responses:
        if r.get("decision") != "rebalance":
            continue
        n += 1
        removed += float(r["drift_before"]["account"]) - float(r["drift_after"]["account"])
        obj = r["objective"]
        cost_frac += float(obj["spread_and_fees"]) + float(obj["impact"])
        cost_ccy += float(obj["spread_and_fees_currency"]) + float(obj["impact_currency"])
    return {
        "rebalances": n,
        "drift_removed": removed,
        "estimated_cost_currency": cost_ccy,
        "drift_removed_per_bp": removed / (cost_frac * 1e4) if cost_frac > 0 else None,
    }


def attribution(fills: Sequence[Any], last_prices: Mapping[str, float]) -> dict[str, float | int]:
    """Rebalancing P&L against buy-and-hold, and implementation shortfall, in currency.

    ``fills`` carry ``instrument, side, quantity, price, arrival_price`` (see ``StoredFill``).
    """
    pnl, shortfall, n = 0.0, 0.0, 0
    for f in fills:
        if f.instrument not in last_prices:
            continue
        sign = 1.0 if f.side == "buy" else -1.0
        pnl += sign * f.quantity * (last_prices[f.instrument] - f.price)
        if f.arrival_price is not None:
            shortfall += sign * f.quantity * (f.price - f.arrival_price)
        n += 1
    return {
        "fills": n,
        "rebalancing_pnl_vs_buy_and_hold": pnl,
        "implementation_shortfall": shortfall,
    }


def frequency(created: Sequence[Any], accounts: int) -> dict[str, float | int | None]:
    """Rebalances per account and the mean days between one account's rebalances.

    ``created`` holds ``(account_id, datetime)`` pairs of ``rebalance`` recommendations.
    """
    by: dict[str, list[Any]] = {}
    for acct, ts in created:
        by.setdefault(acct, []).append(ts)
    gaps = [
        (b - a).total_seconds() / 86400.0
        for times in by.values()
        for a, b in zip(sorted(times), sorted(times)[1:], strict=False)
    ]
    return {
        "rebalances": len(created),
        "per_account": len(created) / accounts if accounts else None,
        "mean_days_between": sum(gaps) / len(gaps) if gaps else None,
    }


def cost_analysis(
    responses: Sequence[Mapping[str, Any]], fills: Sequence[Any]
) -> dict[str, float | int | None]:
    """Estimated against realized trading cost, in currency and bps.

    ``responses`` are stored optimizer responses (JSON); only ``rebalance`` ones count. Their
    estimates: ``objective.spread_and_fees_currency``, ``impact_currency``, ``tax_currency``
    and the traded value ``sum(trades[].value)``. ``fills`` carry ``side, quantity, price,
    arrival_price`` (see ``StoredFill``): the realized cost is the implementation shortfall
    ``sum(sign * quantity * (price - arrival_price))`` over fills with an arrival price, in
    bps of their value. Bps are None without traded value.
    """
    traded, spread, impact, tax, n = 0.0, 0.0, 0.0, 0.0, 0
    for r in responses:
        if r.get("decision") != "rebalance":
            continue
        n += 1
        obj = r["objective"]
        spread += float(obj["spread_and_fees_currency"])
        impact += float(obj["impact_currency"])
        tax += float(obj["tax_currency"])
        traded += sum(float(t["value"]) for t in r.get("trades", ()))
    filled, shortfall = 0.0, 0.0
    for f in fills:
        if f.arrival_price is None:
            continue
        sign = 1.0 if f.side == "buy" else -1.0
        shortfall += sign * f.quantity * (f.price - f.arrival_price)
        filled += f.quantity * f.price

    def bps(cost: float, value: float) -> float | None:
        return cost / value * 1e4 if value > 0 else None

    return {
        "rebalances": n,
        "traded_value": traded,
        "estimated_spread_and_fees_currency": spread,
        "estimated_impact_currency": impact,
        "estimated_cost_bps": bps(spread + impact, traded),
        "estimated_tax_currency": tax,
        "filled_value": filled,
        "realized_cost_currency": shortfall,
        "realized_cost_bps": bps(shortfall, filled),
    }


@dataclass(frozen=True, slots=True)
class BandCount:
    """Drift snapshots of one band width (see ``PerformanceRepository.band_counts``).

    Attributes
    ----------
    width
        Absolute band width, fraction of NAV.
    snapshots, accounts
        Snapshots and accounts in the window.
    beyond
        Snapshots whose max instrument ``|w - w*|`` is at or beyond ``width``.
    accounts_beyond
        Accounts with at least one such snapshot.
    entries
        Snapshots at or beyond ``width`` whose previous snapshot of the account was below it
        (or that are the account's first in the window).
    """

    width: float
    snapshots: int
    accounts: int
    beyond: int
    accounts_beyond: int
    entries: int


def band_sweep(counts: Sequence[BandCount], window_days: float) -> list[dict[str, float | None]]:
    """Frequency analysis of absolute band widths on the observed drift (module docstring):
    per width, the share of snapshots at or beyond it, the accounts that reached it and the
    band entries per account per 30 days (how often a band of that width would fire)."""
    out: list[dict[str, float | None]] = []
    for c in counts:
        per = (
            c.entries / c.accounts / (window_days / 30.0)
            if c.accounts and window_days > 0
            else None
        )
        out.append(
            {
                "width": c.width,
                "snapshots_beyond": c.beyond / c.snapshots if c.snapshots else None,
                "accounts_beyond": float(c.accounts_beyond),
                "entries": float(c.entries),
                "entries_per_account_per_30_days": per,
            }
        )
    return out
