"""Request and response bodies of the HTTP API (pydantic v2).

Units
-----
- Weights are fractions of NAV (``0.25`` = 25 %); a model's ``targets`` plus ``cash_target``
  sum to 1 within 1e-6.
- Cash, cost bases and prices are decimals in the account currency (``cash`` to 6 decimals);
  they are rendered as JSON strings so that no precision is lost.
- Quantities are shares (decimals, fractional shares allowed).
- Timestamps are ISO 8601 in UTC.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from rebalancer.domain.execution import ExecutionPolicy
from rebalancer.domain.model import (
    Account,
    Instrument,
    ModelPortfolio,
    Sleeve,
    TaxLot,
    TaxType,
)
from rebalancer.domain.orders import TimeInForce

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""User-chosen ids: 1-128 characters, letters, digits and ``._:-`` (URL-safe)."""

EntityId = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        description="Id: 1-128 characters of letters, digits and ._:- (starting alphanumeric).",
    ),
]
Text = Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")]
Weight = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6)]
Shares = Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=6)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- instruments
class InstrumentBody(_In):
    """Attributes of an instrument (``PUT /v1/instruments/{instrument_id}``)."""

    name: Text = Field(default="", description="Display name.")
    asset_class: Text = Field(default="equity", description="e.g. equity, fixed_income.")
    sector: Text = Field(default="unknown", description="e.g. technology.")
    lot_size: int = Field(default=1, ge=1, le=1_000_000, description="Trade multiple (shares).")
    wash_sale_group: EntityId | None = Field(
        default=None,
        description="Substantially identical instruments share a group; null: its own group.",
    )
    substitutes: list[EntityId] = Field(
        default_factory=list,
        max_length=50,
        description="Ids of similar, not substantially identical instruments (must exist).",
    )
    settlement_days: int = Field(
        default=1, ge=0, le=10, description="Business days from trade to settlement (T+n)."
    )

    def to_domain(self, instrument_id: str) -> Instrument:
        return Instrument(
            id=instrument_id,
            asset_class=self.asset_class,
            sector=self.sector,
            lot_size=self.lot_size,
            wash_sale_group=self.wash_sale_group,
            substitutes=tuple(self.substitutes),
            settlement_days=self.settlement_days,
        )


class InstrumentCreate(InstrumentBody):
    """Body of ``POST /v1/instruments``."""

    id: EntityId = Field(description="Ticker or other unique symbol, e.g. AAPL.")


class InstrumentOut(BaseModel):
    """An instrument of the (shared) security master."""

    id: str
    asset_class: str
    sector: str
    lot_size: int = Field(description="Trade multiple (shares).")
    wash_sale_group: str | None
    substitutes: list[str]
    settlement_days: int = Field(description="Business days from trade to settlement.")

    @classmethod
    def of(cls, inst: Instrument) -> InstrumentOut:
        return cls(
            id=inst.id,
            asset_class=inst.asset_class,
            sector=inst.sector,
            lot_size=inst.lot_size,
            wash_sale_group=inst.wash_sale_group,
            substitutes=list(inst.substitutes),
            settlement_days=inst.settlement_days,
        )


# ---------------------------------------------------------------------------- models
class ModelBody(_In):
    """A model's content (``PUT /v1/models/{model_id}`` stores it as a new version)."""

    name: Text = Field(default="", description="Display name.")
    targets: dict[EntityId, Weight] = Field(
        max_length=2000,
        description="Instrument id -> target weight (fraction of the sleeve, >= 0), cash "
        "excluded. targets + cash_target must sum to 1 within 1e-6.",
    )
    cash_target: Weight = Field(default=0.0, description="Target cash weight (fraction).")
    bands: dict[str, Any] | None = Field(
        default=None,
        description='Drift tolerance bands, e.g. {"instrument": 0.02, "asset_class": 0.05} '
        "(absolute weight); null keeps the current bands on update.",
    )
    trigger_rule: dict[str, Any] | None = Field(
        default=None,
        description="Trigger rule JSON (threshold, calendar, cash-flow, ...); null keeps the "
        "current rule on update.",
    )

    def to_domain(self, model_id: str) -> ModelPortfolio:
        return ModelPortfolio(model_id, 0, dict(self.targets), self.cash_target, self.name)


class ModelCreate(ModelBody):
    """Body of ``POST /v1/models``."""

    id: EntityId = Field(description="Model id, stable across versions.")


class ModelVersionOut(BaseModel):
    """One stored version of a model."""

    version: int = Field(description="Starts at 1, +1 on every update.")
    targets: dict[str, float] = Field(description="Instrument -> weight (fraction), no cash.")
    cash_target: float = Field(description="Cash weight (fraction).")


class ModelOut(ModelVersionOut):
    """A model at its current version."""

    id: str
    name: str
    bands: dict[str, Any]
    trigger_rule: dict[str, Any] | None

    @classmethod
    def of(
        cls,
        model: ModelPortfolio,
        bands: Any = None,
        trigger_rule: Any = None,
    ) -> ModelOut:
        return cls(
            id=model.id,
            name=model.name,
            version=model.version,
            targets=dict(model.targets),
            cash_target=model.cash_target,
            bands=dict(bands or {}),
            trigger_rule=dict(trigger_rule) if trigger_rule else None,
        )


# ---------------------------------------------------------------------------- accounts
class LotBody(_In):
    """An open tax lot."""

    lot_id: EntityId = Field(description="Unique lot id (unique across all accounts).")
    instrument: EntityId = Field(description="Instrument id (must exist).")
    quantity: Shares = Field(description="Shares held (> 0).")
    cost_basis: Money = Field(description="Cost basis per share (account currency).")
    acquired: date = Field(description="Trade date of the purchase (starts the holding period).")


class SleeveBody(_In):
    """A strategy inside the account following one model."""

    id: EntityId = Field(description="Sleeve id (unique across all accounts).")
    model_id: EntityId = Field(description="The model this sleeve follows (must exist).")
    share: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Fraction of the account NAV; the shares of an account sum to 1.",
    )


class AccountBody(_In):
    """An account's full state (``PUT /v1/accounts/{account_id}`` replaces it)."""

    name: Text = Field(default="", description="Display name.")
    household_id: EntityId | None = Field(
        default=None, description="Household (created for the tenant on first use)."
    )
    tax_type: TaxType = Field(default=TaxType.TAXABLE, description="Tax treatment.")
    cash: Money = Field(default=Decimal(0), description="Settled cash (account currency).")
    lots: list[LotBody] = Field(default_factory=list, max_length=10_000)
    sleeves: list[SleeveBody] = Field(
        default_factory=list, max_length=20, description="Strategies; shares sum to 1."
    )

    def to_domain(self, account_id: str, tenant_id: str) -> Account:
        return Account(
            id=account_id,
            tenant_id=tenant_id,
            cash=self.cash,
            lots=[
                TaxLot(lot.lot_id, lot.instrument, lot.quantity, lot.cost_basis, lot.acquired)
                for lot in self.lots
            ],
            sleeves=[Sleeve(s.id, s.model_id, s.share) for s in self.sleeves],
            household_id=self.household_id,
            tax_type=self.tax_type,
            name=self.name,
        )


class AccountCreate(AccountBody):
    """Body of ``POST /v1/accounts``."""

    id: EntityId = Field(description="Account id.")


class LotOut(BaseModel):
    lot_id: str
    instrument: str
    quantity: Decimal = Field(description="Shares.")
    cost_basis: Decimal = Field(description="Per share, account currency.")
    acquired: date


class SleeveOut(BaseModel):
    id: str
    model_id: str
    share: float = Field(description="Fraction of account NAV.")


class AccountOut(BaseModel):
    """An account with its sleeves, lots and settled cash."""

    id: str
    name: str
    household_id: str | None
    tax_type: TaxType
    cash: Decimal = Field(description="Settled cash (account currency).")
    lots: list[LotOut]
    sleeves: list[SleeveOut]

    @classmethod
    def of(cls, a: Account) -> AccountOut:
        return cls(
            id=a.id,
            name=a.name,
            household_id=a.household_id,
            tax_type=a.tax_type,
            cash=a.cash,
            lots=[
                LotOut(
                    lot_id=lot.lot_id,
                    instrument=lot.instrument,
                    quantity=lot.quantity,
                    cost_basis=lot.cost_basis,
                    acquired=lot.acquired,
                )
                for lot in a.lots
            ],
            sleeves=[SleeveOut(id=s.id, model_id=s.model_id, share=s.share) for s in a.sleeves],
        )


class AccountPage(BaseModel):
    """A page of accounts, ordered by id."""

    items: list[AccountOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class DriftOut(BaseModel):
    """Current drift (weight minus target, fractions of NAV) at every level.

    ``levels`` maps a level (``instrument``, ``sector``, ``asset_class``, ...) to keys with
    ``weight``, ``target``, ``absolute`` and ``relative`` drift; ``summaries`` gives per level the
    sum of absolute drifts, the one-way turnover to fix it and the largest drift.
    """

    model_config = ConfigDict(extra="allow")

    account_id: str
    as_of: str | None = Field(description="Time of the newest price used.")
    levels: dict[str, dict[str, dict[str, float | None]]]
    summaries: dict[str, dict[str, Any]]
    sleeve_internal: dict[str, Any]
    tracking_error: float | None = Field(description="Ex-ante tracking error (volatility).")
    nav: float = Field(description="Net asset value (account currency).")
    trend: dict[str, float | None] | None = Field(
        description="Trend of total drift from stored snapshots (null with fewer than two)."
    )
    snapshots: int = Field(description="Stored drift snapshots used for the trend.")


# ---------------------------------------------------------------------------- rebalancing
class RebalanceRequest(_In):
    """Optional body of ``POST /v1/accounts/{account_id}/rebalance``."""

    reason: Text = Field(default="manual", min_length=1, description="Why (shown in the log).")
    priority: int = Field(default=0, ge=0, le=100, description="Higher is served first.")


class RebalanceAccepted(BaseModel):
    """A rebalance was opened (or an open one was joined)."""

    rebalance_id: uuid.UUID
    account_id: str
    created: bool = Field(
        description="False when an open rebalance of the account was joined instead."
    )


class OrderOut(BaseModel):
    """An order sent (or to be sent) to the venue."""

    id: uuid.UUID
    recommendation_id: uuid.UUID
    account_id: str
    instrument: str
    side: str = Field(description="buy or sell.")
    quantity: Decimal = Field(description="Shares.")
    filled_quantity: Decimal = Field(description="Shares filled so far.")
    avg_fill_price: Decimal | None = Field(description="Currency per share.")
    status: str
    order_type: str
    limit_price: Decimal | None = Field(description="Currency per share.")
    time_in_force: str
    lots: list[dict[str, Any]] = Field(description="Lots to sell: lot_id and quantity.")
    arrival_price: Decimal | None = Field(description="Price when generated (per share).")
    reason: str | None = Field(description="Reject or cancel reason, if any.")
    wave: int = Field(description="0: sent at approval; 1: sent after the sells filled.")
    created_at: datetime
    updated_at: datetime


class RebalanceOut(BaseModel):
    """A rebalance: its status, reasons, recommendation and orders."""

    id: uuid.UUID
    account_id: str
    status: str
    reasons: list[str]
    priority: int
    created_at: datetime
    updated_at: datetime
    recommendation_id: uuid.UUID | None
    recommendation_status: str | None
    orders: list[OrderOut]


class RecommendationOut(BaseModel):
    """A stored recommendation with the optimizer's full analysis."""

    id: uuid.UUID
    rebalance_id: uuid.UUID
    account_id: str
    decision: str = Field(description="rebalance or no_trade.")
    status: str = Field(description="pending_approval, approved, no_trade, ...")
    net_benefit: float = Field(description="Objective improvement (account currency).")
    created_at: datetime
    approved_at: datetime | None
    approved_by: str | None
    analysis: dict[str, Any] = Field(description="The AnalyzeResponse that produced it.")


class ApprovalOut(BaseModel):
    """The orders an approval created (the same orders when repeated)."""

    recommendation_id: uuid.UUID
    orders: list[OrderOut]


class ExecutionFields(_In):
    """How approved orders go to the venue (fields shared by the approval bodies)."""

    limit_offset_bps: Decimal | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="None: market orders; else limit orders this many bps through arrival.",
    )
    time_in_force: TimeInForce = TimeInForce.DAY

    def policy(self) -> ExecutionPolicy:
        """The domain's execution policy of these fields."""
        return ExecutionPolicy(self.limit_offset_bps, self.time_in_force)


class CancelRequest(_In):
    """Optional body of ``POST /v1/orders/{order_id}/cancel``."""

    reason: Text = Field(default="cancelled by user", min_length=1)


class RejectRequest(_In):
    """Optional body of ``POST /v1/recommendations/{recommendation_id}/reject``."""

    reason: Text = Field(default="rejected by user", min_length=1)


class RejectionOut(BaseModel):
    """A rejected recommendation (the same answer when repeated)."""

    recommendation_id: uuid.UUID
    status: str = Field(description="`rejected`: it will never trade; its rebalance is finished.")


class AlertOut(BaseModel):
    """A drift alert of an account."""

    id: uuid.UUID
    account_id: str
    kind: str
    level: str = Field(description="Drift level (instrument, sector, asset_class, account).")
    key: str = Field(description="Instrument, sector, ... the alert is about.")
    severity: str
    state: str = Field(description="raised or cleared.")
    value: float | None = Field(description="Drift (fraction of NAV) when raised.")
    band: float | None = Field(description="Tolerance band that was breached.")
    message: str
    raised_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class TriggerEvaluationOut(BaseModel):
    """One evaluation of a trigger rule (fired or not, and why)."""

    id: uuid.UUID
    account_id: str
    ts: datetime
    kind: str
    fired: bool
    priority: int
    reason: str
    inputs: dict[str, Any]
    period_key: str | None
    rebalance_id: uuid.UUID | None
