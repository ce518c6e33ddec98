"""Request and response models of ``POST /v1/analyze`` (pydantic v2).

Units: weights, trades, limits and objective parts are fractions of NAV unless the field name
ends in ``_currency`` or says otherwise; prices and cost bases are currency per share; quantities
are shares; ``*_bps`` are basis points (1e-4).

Per-field rules (non-negative, positive prices, ...) are checked when a model is built.
Rules that relate several fields (targets summing to 1, risk model instruments matching,
factor shapes) are checked by :func:`rebalancer.optimizer.validation.check_request`, which
``analyze`` calls and which raises :class:`~rebalancer.domain.errors.InvalidInput` naming the
fields.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from rebalancer.optimizer.response_schemas import (
    AnalyzeResponse,
    ConstraintReport,
    CostBenefit,
    DeferredLot,
    DriftReport,
    FallbackStep,
    LotSale,
    ObjectiveBreakdown,
    RiskContribution,
    RiskEffect,
    RiskReport,
    SolverReport,
    StressResult,
    TaxSummary,
    TradeOut,
)

__all__ = [
    "AnalyzeRequest",
    "AnalyzeResponse",
    "ConstraintReport",
    "CostBenefit",
    "CovarianceRiskModel",
    "DeferredLot",
    "DriftReport",
    "FactorRiskModel",
    "FallbackStep",
    "InstrumentIn",
    "LotIn",
    "LotSale",
    "ObjectiveBreakdown",
    "Policy",
    "Portfolio",
    "RecentBuy",
    "RiskContribution",
    "RiskEffect",
    "RiskReport",
    "SolverReport",
    "StressResult",
    "StressScenario",
    "TaxSummary",
    "TradeOut",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LotIn(_Model):
    """One open tax lot."""

    lot_id: str = Field(min_length=1, description="Unique lot id; echoed unchanged in answers.")
    instrument: str = Field(min_length=1)
    quantity: float = Field(gt=0, description="Shares held.")
    cost_basis: float = Field(ge=0, description="Cost basis per share (currency).")
    acquired: date = Field(description="Trade date of the purchase.")


class RecentBuy(_Model):
    """A purchase that no longer has an open lot here (or in another account) but counts for
    the wash-sale window."""

    instrument: str = Field(min_length=1)
    date: date
    quantity: float = Field(gt=0, description="Shares bought.")


class Portfolio(_Model):
    """Cash and open lots of the account."""

    cash: float = Field(ge=0, description="Settled cash (currency).")
    lots: list[LotIn] = Field(default_factory=list)


class InstrumentIn(_Model):
    """Market data and trading attributes of one instrument."""

    id: str = Field(min_length=1)
    price: float = Field(gt=0, description="Currency per share.")
    adv_shares: float = Field(
        default=1e12, ge=0, description="Average daily volume (shares); 0 makes it untradable."
    )
    daily_volatility: float = Field(default=0.02, ge=0, description="Daily return volatility.")
    half_spread_bps: float = Field(default=5.0, ge=0, description="Half bid-ask spread (bps).")
    sector: str = "unknown"
    asset_class: str = "equity"
    lot_size: int = Field(default=1, ge=1, description="Trades are multiples of this (shares).")
    wash_sale_group: str | None = Field(
        default=None, description="Substantially identical instruments share a group."
    )
    substitutes: list[str] = Field(
        default_factory=list,
        description="Similar, not substantially identical instruments (tax-loss harvesting).",
    )


class CovarianceRiskModel(_Model):
    """Full covariance of instrument returns (return^2 over the risk horizon)."""

    instruments: list[str]
    covariance: list[list[float]]


class FactorRiskModel(_Model):
    """Factor model ``Sigma = B F B' + diag(d)``; the dense n x n matrix is never built."""

    instruments: list[str]
    factor_exposures: list[list[float]] = Field(description="B, n x k.")
    factor_covariance: list[list[float]] = Field(description="F, k x k, positive semidefinite.")
    specific_variance: list[float] = Field(description="d, n, non-negative.")


class StressScenario(_Model):
    """A named shock of instrument returns; instruments not listed return 0."""

    name: str = Field(min_length=1)
    returns: dict[str, float] = Field(description="Instrument -> return (e.g. -0.3).")
    max_loss: float | None = Field(
        default=None, ge=0, description="Largest allowed loss (fraction of NAV); None: report."
    )


class Policy(_Model):
    """Costs, tax rates and limits. Every field is optional; defaults are documented here."""

    risk_aversion: float = Field(
        default=1.0,
        ge=0,
        description="gamma: weight of the tracking variance (return^2 over the risk-model "
        "horizon) in the objective; it prices drift as an opportunity cost.",
    )
    commission_bps: float = Field(default=0.0, ge=0, description="Fees (bps of traded value).")
    impact_coefficient: float = Field(
        default=0.5, ge=0, description="Square-root-law impact coefficient (dimensionless)."
    )
    short_term_rate: float = Field(default=0.35, ge=0, le=1, description="Tax rate, short term.")
    long_term_rate: float = Field(default=0.15, ge=0, le=1, description="Tax rate, long term.")
    long_term_days: int = Field(default=365, ge=0, description="Held more than this: long term.")
    wash_sale_days: int = Field(default=30, ge=0, description="Wash-sale look-back (days).")
    lt_wait_days: int = Field(
        default=30,
        ge=0,
        description="A short-term lot with a gain that turns long-term within this many days "
        "is held back (deferred) when the tax saved by waiting exceeds the waiting cost.",
    )
    lt_wait_cost_bps_per_day: float = Field(
        default=2.0,
        ge=0,
        description="Waiting cost of deferring a lot sale (bps of the lot value per day).",
    )
    max_adv_fraction: float = Field(
        default=0.1, ge=0, description="Per-instrument trade cap as a fraction of ADV."
    )
    max_turnover: float | None = Field(
        default=None, ge=0, description="sum |z| (fraction of NAV); None: no limit."
    )
    min_cash_weight: float = Field(
        default=0.0, ge=0, le=1, description="Liquidity buffer: post-trade cash floor."
    )
    raise_cash: float = Field(
        default=0.0,
        ge=0,
        description="Emergency liquidity: post-trade cash must exceed current cash by this "
        "amount (currency), raised at least cost, impact and tax.",
    )
    raise_cash_allow_buys: bool = Field(
        default=False, description="Whether buys are allowed while raising cash."
    )
    no_buy: list[str] = Field(default_factory=list)
    no_sell: list[str] = Field(default_factory=list)
    min_trade_value: float = Field(
        default=0.0, ge=0, description="Trades below this value (currency) are dropped."
    )
    min_net_benefit: float = Field(
        default=0.0,
        ge=0,
        description="Answer no_trade when f(0) - f(z) (currency) is at or below this.",
    )
    var_confidence: float = Field(default=0.95, gt=0.5, lt=1, description="VaR confidence.")
    max_var: float | None = Field(
        default=None, gt=0, description="Parametric VaR limit (fraction of NAV); None: report."
    )
    max_tracking_error: float | None = Field(
        default=None, gt=0, description="Ex-ante tracking error limit (volatility units)."
    )
    max_sector_risk_share: dict[str, float] = Field(
        default_factory=dict,
        description="Sector -> largest share of ex-ante volatility it may contribute.",
    )
    stress_scenarios: list[StressScenario] = Field(default_factory=list)


class AnalyzeRequest(_Model):
    """Body of ``POST /v1/analyze``."""

    as_of: date
    portfolio: Portfolio
    recent_buys: list[RecentBuy] = Field(default_factory=list)
    targets: dict[str, float] = Field(description='Instrument or "CASH" -> weight; sums to 1.')
    instruments: list[InstrumentIn] = Field(min_length=1)
    risk_model: CovarianceRiskModel | FactorRiskModel
    policy: Policy = Field(default_factory=Policy)
