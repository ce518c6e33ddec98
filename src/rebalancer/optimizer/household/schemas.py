"""Request and response models of ``POST /v1/analyze/household`` (pydantic v2).

A household request is a list of account requests in the single-account format
(:class:`~rebalancer.optimizer.schemas.AnalyzeRequest`), each with its tax type, plus optional
household-level targets (with a risk model over every instrument of the household), transfer
links between accounts and the household's recent loss sales.

Units: weights are fractions of NAV (of the account inside an account request, of the
household NAV in household fields); money is currency; ``tax_drag`` is a fraction of the value
held per year.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from rebalancer.domain.model import TaxType
from rebalancer.optimizer.enums import Decision, SolverName, SolveStatus
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest, CovarianceRiskModel, FactorRiskModel

DEFAULT_TAX_DRAG = {"fixed_income": 0.01}
"""Annual tax drag by asset class (fraction of value held in a taxable account per year)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class HouseholdAccount(_Model):
    """One account of the household: its tax type and its single-account request."""

    id: str = Field(min_length=1)
    tax_type: TaxType = TaxType.TAXABLE
    request: AnalyzeRequest = Field(
        description="The account in the POST /v1/analyze format. Its policy limits hold per "
        "account; with household targets its own targets only weigh "
        "policy.account_tracking_weight. Tax rates are ignored (0) unless taxable."
    )


class TransferLink(_Model):
    """Cash may move from one account to another (otherwise each account self-finances)."""

    from_account: str = Field(min_length=1)
    to_account: str = Field(min_length=1)
    max_amount: float | None = Field(
        default=None, ge=0, description="Largest transfer (currency); None: no limit."
    )


class RecentLossSale(_Model):
    """A sale at a loss in a taxable account of the household (wash-sale window)."""

    account_id: str = Field(min_length=1)
    instrument: str = Field(min_length=1)
    date: date


class HouseholdPolicy(_Model):
    """Household-level weights; every field is optional (defaults documented here)."""

    risk_aversion: float = Field(
        default=1.0, ge=0, description="gamma of the household tracking term (return^2)."
    )
    account_tracking_weight: float | None = Field(
        default=None,
        ge=0,
        description="Multiplier of every account's own tracking term; None: 0 with household "
        "targets (the household target decides), 1 without them.",
    )
    location_horizon_years: float = Field(
        default=1.0,
        ge=0,
        description="Asset location: holding an instrument with tax_drag d in a taxable "
        "account costs d * horizon per unit of value (fraction of household NAV).",
    )
    asset_class_tax_drag: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TAX_DRAG),
        description="Default tax_drag per asset class (fixed_income 0.01 = 1 % a year).",
    )
    transfer_cost_bps: float = Field(
        default=1.0, ge=0, description="Cost of moving cash between accounts (bps)."
    )
    wash_sale_days: int = Field(
        default=30, ge=0, description="Window of recent_loss_sales (days before as_of)."
    )
    min_net_benefit: float = Field(
        default=0.0, ge=0, description="no_trade when the household improvement is at most this."
    )
    max_tracking_error: float | None = Field(
        default=None,
        gt=0,
        description="Household tracking error limit: sqrt((x - x*)' Sigma_H (x - x*)) at most "
        "this (return units of the household risk model); needs household targets.",
    )


class HouseholdRequest(_Model):
    """Body of ``POST /v1/analyze/household``."""

    as_of: date
    accounts: list[HouseholdAccount] = Field(min_length=1)
    targets: dict[str, float] | None = Field(
        default=None,
        description='Household targets: instrument or "CASH" -> fraction of household NAV.',
    )
    risk_model: CovarianceRiskModel | FactorRiskModel | None = Field(
        default=None,
        description="Risk model over every instrument of the household (needed with targets).",
    )
    tax_drag: dict[str, float] = Field(
        default_factory=dict,
        description="Instrument -> annual tax drag (overrides policy.asset_class_tax_drag).",
    )
    links: list[TransferLink] = Field(default_factory=list)
    recent_loss_sales: list[RecentLossSale] = Field(default_factory=list)
    policy: HouseholdPolicy = Field(default_factory=HouseholdPolicy)


# ------------------------------------------------------------------------------ response
class HouseholdObjective(_Out):
    """Objective terms as fractions of household NAV (and ``total_currency``)."""

    total: float
    household_tracking: float
    account_tracking: float
    spread_and_fees: float
    impact: float
    tax: float
    location: float
    transfers: float
    total_currency: float


class TransferOut(_Out):
    from_account: str
    to_account: str
    amount: float = Field(description="Currency.")


class AccountAnswer(_Out):
    """One account's part of the household answer (approvable like a single-account one)."""

    account_id: str
    tax_type: TaxType
    nav: float
    transfer_in: float = Field(description="Net cash received from other accounts (currency).")
    analysis: AnalyzeResponse


class HouseholdDrift(_Out):
    """Household weights minus household targets; ``household`` is half the sum of |drift|."""

    by_instrument: dict[str, float]
    by_asset_class: dict[str, float]
    household: float


class WashSaleReport(_Out):
    """Cross-account wash-sale decisions (``account:lot`` and ``account:instrument``)."""

    blocked_loss_lots: list[str]
    blocked_buys: list[str]
    settled_groups: list[str] = Field(
        description="Groups both sold at a loss and bought in a "
        "first solve; one side was forbidden."
    )


class HouseholdSolver(_Out):
    name: SolverName
    status: SolveStatus
    solves: int
    solve_time_ms: float
    total_time_ms: float
    compiled_cache_hit: bool


class HouseholdResponse(_Out):
    """Body of the ``POST /v1/analyze/household`` answer."""

    decision: Decision
    nav: float
    accounts: list[AccountAnswer]
    transfers: list[TransferOut]
    objective: HouseholdObjective
    objective_before: HouseholdObjective
    net_benefit: float = Field(description="f(0) - f(z) in currency (household).")
    drift_before: HouseholdDrift | None
    drift_after: HouseholdDrift | None
    location_before: dict[str, dict[str, float]] = Field(
        description="Asset class -> tax type -> value held (currency)."
    )
    location_after: dict[str, dict[str, float]]
    wash_sale: WashSaleReport
    solver: HouseholdSolver
    messages: list[str] = Field(default_factory=list)
