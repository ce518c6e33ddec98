"""Households: settings, drift, the household rebalance and the stateless household analysis;
sleeves of one account: the stateless sleeve netting analysis, a stored account's sleeve drift
and its sleeve analysis (unified or strategy-level)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from rebalancer.entrypoints.api.deps import AdminCtx, ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.idempotency import IdempotencyKey, post_idempotent
from rebalancer.entrypoints.api.schemas import ID_PATTERN
from rebalancer.optimizer.household import HouseholdRequest, HouseholdResponse, TransferLink
from rebalancer.optimizer.household.sleeves import (
    SleeveMode,
    SleeveRequest,
    SleeveResponse,
    analyze_sleeves,
)
from rebalancer.service_layer.handlers.households import (
    household_drift,
    household_optimizer,
    put_household,
    rebalance_household,
)
from rebalancer.service_layer.handlers.sleeves import (
    analyze_stored_sleeves,
    put_sleeve_holdings,
    sleeve_drift,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

HouseholdId = Annotated[str, Path(pattern=ID_PATTERN, description="Household id.")]
AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="Account id.")]


class HouseholdIn(BaseModel):
    """Body of ``PUT /v1/households/{id}``."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    targets: dict[str, float] | None = Field(
        default=None, description='Instrument or "CASH" -> fraction of household NAV.'
    )
    links: list[TransferLink] = Field(
        default_factory=list, description="Allowed cash transfers between member accounts."
    )


class RebalanceBody(BaseModel):
    """Body of ``POST /v1/households/{id}/rebalance`` (optional; nothing to set yet)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = "household"


@router.put("/households/{household_id}", tags=["households"], summary="Set household targets")
def put(household_id: HouseholdId, body: HouseholdIn, ctx: AdminCtx) -> dict[str, Any]:
    """Create or replace the household's targets and transfer links (accounts join a household
    through their ``household_id``)."""
    with ctx.uow() as uow:
        out = put_household(uow, household_id, body.name, body.targets, body.links)
        uow.audit.record(ctx.actor, "put", "household", household_id, body.model_dump())
        uow.commit()
    return out


@router.get("/households/{household_id}/drift", tags=["households"])
def drift(household_id: HouseholdId, ctx: ReadCtx) -> dict[str, Any]:
    """Household drift against its targets, each account's drift and asset location."""
    with ctx.uow() as uow:
        return household_drift(uow, household_id)


@router.post(
    "/households/{household_id}/rebalance",
    tags=["households"],
    summary="Rebalance every account of the household at once",
)
def rebalance(
    household_id: HouseholdId,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: RebalanceBody | None = None,
) -> Any:
    """Solve the household and store one recommendation per account (approve each with
    ``POST /v1/recommendations/{id}/approve``). With an ``Idempotency-Key`` a retry returns the
    first answer and does nothing more."""

    def work(uow: UnitOfWork) -> dict[str, Any]:
        return rebalance_household(uow, household_id, ctx.actor, household_optimizer())

    return post_idempotent(
        request, ctx, idempotency_key, body or RebalanceBody(), work, work_commits=False
    )


@router.post(
    "/analyze/household",
    response_model=HouseholdResponse,
    tags=["analyze"],
    summary="Recommend trades for a household (stateless)",
)
def analyze_household(body: HouseholdRequest, ctx: ReadCtx) -> HouseholdResponse:
    """One problem over every account of the household; nothing is stored."""
    del ctx
    return household_optimizer().analyze(body)


class SleeveAnalysisBody(BaseModel):
    """Body of ``POST /v1/accounts/{id}/sleeves/analyze``: the decision level."""

    model_config = ConfigDict(extra="forbid")
    mode: SleeveMode = Field(
        default=SleeveMode.UNIFIED,
        description="unified: one netted decision over every sleeve; strategy: rebalance the "
        "sleeve sleeve_id alone, the others frozen.",
    )
    sleeve_id: str | None = Field(default=None, description="The sleeve of strategy mode.")


@router.post(
    "/analyze/sleeves",
    response_model=SleeveResponse,
    tags=["analyze"],
    summary="Rebalance the sleeves of one account, netted (stateless)",
)
def analyze_sleeves_route(body: SleeveRequest, ctx: ReadCtx) -> SleeveResponse:
    """One account request (the ``POST /v1/analyze`` format; its targets are replaced by the
    sleeves') plus sleeves with share, model targets and attributed holdings and cash. Trades
    that would cancel between sleeves become re-attributions; only the net trade trades.
    Nothing is stored."""
    del ctx
    return analyze_sleeves(body)


class SleeveHoldingsIn(BaseModel):
    """One sleeve's attribution of the account's pooled lots and cash."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, description="Sleeve id (a sleeve of the account).")
    holdings: dict[str, float] = Field(
        default_factory=dict, description="Instrument -> shares this sleeve owns."
    )
    cash: float = Field(default=0.0, ge=0, description="Cash this sleeve owns (currency).")


class SleeveAttributionIn(BaseModel):
    """Body of ``PUT /v1/accounts/{id}/sleeves/holdings``: every sleeve's part; the parts must
    add up to the account's lots (per instrument) and cash."""

    model_config = ConfigDict(extra="forbid")
    sleeves: list[SleeveHoldingsIn] = Field(min_length=1)


@router.put("/accounts/{account_id}/sleeves/holdings", tags=["accounts"])
def put_sleeves_holdings(
    account_id: AccountId, body: SleeveAttributionIn, ctx: AdminCtx
) -> dict[str, Any]:
    """Store which sleeve owns how much of each instrument and of the cash (e.g. the
    ``holdings_after`` / ``cash_after`` of a sleeve analysis once its trades are done). Used
    by the sleeve drift and analysis while it adds up to the account's lots and cash; answers
    the sleeve drift."""
    with ctx.uow() as uow:
        out = put_sleeve_holdings(
            uow,
            account_id,
            {s.id: dict(s.holdings) for s in body.sleeves},
            {s.id: s.cash for s in body.sleeves},
        )
        uow.audit.record(ctx.actor, "put", "sleeve_holdings", account_id, body.model_dump())
        uow.commit()
    return out


@router.get("/accounts/{account_id}/sleeves/drift", tags=["accounts"])
def sleeves_drift(account_id: AccountId, ctx: ReadCtx) -> dict[str, Any]:
    """Drift of every sleeve of the account (stored attribution while it adds up, else pooled
    holdings attributed pro rata to what each sleeve should hold) and of the account against
    the blended target."""
    with ctx.uow() as uow:
        return sleeve_drift(uow, account_id)


@router.post(
    "/accounts/{account_id}/sleeves/analyze",
    response_model=SleeveResponse,
    tags=["accounts"],
    summary="Sleeve analysis of a stored account (unified or one strategy)",
)
def sleeves_analyze(
    account_id: AccountId, ctx: ReadCtx, body: SleeveAnalysisBody | None = None
) -> SleeveResponse:
    """The sleeve optimizer on the stored lots, cash and models; nothing is stored."""
    body = body or SleeveAnalysisBody()
    with ctx.uow() as uow:
        return analyze_stored_sleeves(uow, account_id, body.mode, body.sleeve_id)
