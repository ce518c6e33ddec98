"""Response models of ``POST /v1/analyze`` (re-exported by :mod:`rebalancer.optimizer.schemas`).

Units: fractions of NAV unless the name ends in ``_currency``; quantities in shares.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from rebalancer.optimizer.enums import (
    ConstraintName,
    Decision,
    Reason,
    Side,
    SolverName,
    SolveStatus,
    Term,
)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class LotSale(_Out):
    """Part of a sell taken from one lot (specific-lot identification)."""

    lot_id: str
    quantity: float = Field(description="Shares sold from this lot.")
    realized_gain: float = Field(description="Currency; negative for a loss.")
    term: Term
    tax_currency: float = Field(description="Estimated tax (negative: tax saved).")


class RiskEffect(_Out):
    """Portfolio risk before and after this trade alone."""

    volatility_before: float
    volatility_after: float
    var_before: float
    var_after: float
    stress_loss_before: float = Field(description="Worst stress loss (fraction of NAV).")
    stress_loss_after: float


class TradeOut(_Out):
    """One recommended trade with its explanation."""

    instrument: str
    side: Side
    quantity: float = Field(description="Shares, a multiple of lot_size (or a whole lot).")
    value: float = Field(description="Currency, positive.")
    lots: list[LotSale] = Field(default_factory=list)
    reasons: list[Reason]
    explanation: str
    tax_currency: float
    cost_bps: float = Field(description="Spread, fees and impact in bps of the trade value.")
    risk_effect: RiskEffect
    weight_before: float
    weight_after: float
    target: float


class ObjectiveBreakdown(_Out):
    """Objective terms as fractions of NAV and in currency."""

    total: float
    tracking: float
    spread_and_fees: float
    impact: float
    tax: float
    total_currency: float
    tracking_currency: float
    spread_and_fees_currency: float
    impact_currency: float
    tax_currency: float


class DriftReport(_Out):
    """Weight minus target, by level; ``account`` is half the sum of absolute drifts."""

    by_instrument: dict[str, float]
    by_sector: dict[str, float]
    by_asset_class: dict[str, float]
    account: float


class StressResult(_Out):
    name: str
    loss_before: float
    loss_after: float
    limit: float | None


class RiskContribution(_Out):
    """Marginal (d vol / d w) and component (w * marginal) contributions to volatility."""

    marginal: float
    component: float
    share: float


class RiskReport(_Out):
    """Ex-ante risk of the portfolio before and after the recommendation."""

    volatility_before: float
    volatility_after: float
    tracking_error_before: float
    tracking_error_after: float
    var_confidence: float
    var_before: float
    var_after: float
    stress: list[StressResult]
    contributions_by_instrument: dict[str, RiskContribution]
    contributions_by_sector: dict[str, RiskContribution]


class ConstraintReport(_Out):
    """One constraint checked on the rounded trades; ``slack = limit - value`` (>= 0 holds)."""

    name: ConstraintName
    fields: list[str]
    subject: str = Field(default="", description="Instrument, lot, sector or scenario, if any.")
    value: float
    limit: float
    slack: float
    binding: bool


class FallbackStep(_Out):
    solver: SolverName
    reason: str


class SolverReport(_Out):
    """Which solver produced the answer and how."""

    name: SolverName
    status: SolveStatus
    iterations: int
    solve_time_ms: float
    total_time_ms: float
    compiled_cache_hit: bool
    solves: int = Field(description="Solves run (wash-sale and risk-budget refinements).")
    fallbacks: list[FallbackStep]


class DeferredLot(_Out):
    """A lot held back because it turns long-term soon (tax-aware timing)."""

    lot_id: str
    instrument: str
    long_term_on: date
    days: int
    tax_saved_currency: float
    waiting_cost_currency: float


class TaxSummary(_Out):
    """After-tax figures of the recommendation (currency)."""

    short_term_gain: float
    long_term_gain: float
    harvested_losses: float
    estimated_tax: float
    deferred_lots: list[DeferredLot]
    blocked_by_wash_sale: list[str] = Field(description="Loss lots not sellable (wash sale).")


class CostBenefit(_Out):
    """Opportunity cost of not trading against every cost of trading (currency)."""

    opportunity_cost_of_not_trading: float
    tracking_cost_after: float
    spread_and_fees: float
    impact: float
    tax: float
    net_benefit: float


class AnalyzeResponse(_Out):
    """Body of the ``POST /v1/analyze`` answer."""

    decision: Decision
    nav: float
    cash_before: float
    cash_after: float
    trades: list[TradeOut]
    objective: ObjectiveBreakdown
    objective_before: ObjectiveBreakdown
    net_benefit: float = Field(description="f(0) - f(z) in currency.")
    drift_before: DriftReport
    drift_after: DriftReport
    risk: RiskReport
    tax: TaxSummary
    cost_benefit: CostBenefit
    constraints: list[ConstraintReport]
    solver: SolverReport
    messages: list[str] = Field(default_factory=list)
