"""Accounts with lots, sleeves and cash; their drift, alerts and trigger log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from rebalancer.entrypoints.api.deps import AdminCtx, ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.schemas import (
    ID_PATTERN,
    AccountBody,
    AccountCreate,
    AccountOut,
    AccountPage,
    AlertOut,
    DriftOut,
    TriggerEvaluationOut,
)
from rebalancer.entrypoints.api.store import ensure_household
from rebalancer.service_layer.handlers.monitoring import drift_view
from rebalancer.service_layer.handlers.portfolio import create_account, replace_account

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="Account id.")]


@router.post(
    "/accounts",
    response_model=AccountOut,
    status_code=status.HTTP_201_CREATED,
    tags=["accounts"],
    summary="Create an account with sleeves, lots and cash",
)
def create_account_route(body: AccountCreate, ctx: AdminCtx) -> AccountOut:
    """Create an account; 409 when the id exists, 404 naming an unknown instrument or model."""
    with ctx.uow() as uow:
        uow.tenants.ensure(uow.tenant_id)
        if body.household_id is not None:
            ensure_household(uow.conn, uow.tenant_id, body.household_id)
        uow.audit.record(ctx.actor, "create", "account", body.id, {"lots": len(body.lots)})
        account = create_account(uow, body.to_domain(body.id, uow.tenant_id))
    return AccountOut.of(account)


@router.get("/accounts", response_model=AccountPage, tags=["accounts"])
def list_accounts(
    ctx: ReadCtx,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Accounts to skip.")] = 0,
    model_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Only accounts following this model.")
    ] = None,
) -> AccountPage:
    """The tenant's accounts, ordered by id, one page at a time."""
    with ctx.uow() as uow:
        ids = uow.accounts.list_ids(model_id=model_id, limit=limit + 1, offset=offset)
        accounts = uow.accounts.get_many(ids[:limit])
    more = len(ids) > limit
    return AccountPage(
        items=[AccountOut.of(a) for a in accounts],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
def get_account(account_id: AccountId, ctx: ReadCtx) -> AccountOut:
    """One account; 404 naming the id when unknown (or another tenant's)."""
    with ctx.uow() as uow:
        return AccountOut.of(uow.accounts.get(account_id))


@router.put("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
def replace_account_route(account_id: AccountId, body: AccountBody, ctx: AdminCtx) -> AccountOut:
    """Replace an account's sleeves, lots and cash (a full state update)."""
    with ctx.uow() as uow:
        uow.accounts.require(account_id)
        if body.household_id is not None:
            ensure_household(uow.conn, uow.tenant_id, body.household_id)
        uow.audit.record(ctx.actor, "replace", "account", account_id, {"lots": len(body.lots)})
        account = replace_account(uow, body.to_domain(account_id, uow.tenant_id))
    return AccountOut.of(account)


@router.get("/accounts/{account_id}/drift", response_model=DriftOut, tags=["monitoring"])
def get_drift(account_id: AccountId, ctx: ReadCtx) -> DriftOut:
    """Current drift at every level, NAV and the trend of stored snapshots."""
    with ctx.uow() as uow:
        return DriftOut.model_validate(drift_view(uow, account_id))


@router.get("/accounts/{account_id}/alerts", response_model=list[AlertOut], tags=["monitoring"])
def list_alerts(
    account_id: AccountId,
    ctx: ReadCtx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlertOut]:
    """Drift alerts of the account, newest first."""
    with ctx.uow() as uow:
        uow.accounts.require(account_id)
        rows = uow.rebalancing.alerts(account_id, limit=limit)
    return [AlertOut.model_validate(r, from_attributes=True) for r in rows]


@router.post(
    "/accounts/{account_id}/alerts/{alert_id}/acknowledge",
    response_model=AlertOut,
    tags=["monitoring"],
)
def acknowledge_alert(account_id: AccountId, alert_id: uuid.UUID, ctx: TradeCtx) -> AlertOut:
    """Mark an alert as seen (who and when are recorded)."""
    with ctx.uow() as uow:
        uow.accounts.require(account_id)
        row = uow.rebalancing.acknowledge_alert(account_id, alert_id, ctx.actor)
        uow.audit.record(
            ctx.actor, "acknowledge", "alert", str(alert_id), {"account_id": account_id}
        )
        uow.commit()
    return AlertOut.model_validate(row, from_attributes=True)


@router.get(
    "/accounts/{account_id}/triggers",
    response_model=list[TriggerEvaluationOut],
    tags=["monitoring"],
)
def list_trigger_evaluations(
    account_id: AccountId,
    ctx: ReadCtx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TriggerEvaluationOut]:
    """The trigger evaluation log of the account (fired or not, and why), newest first."""
    with ctx.uow() as uow:
        uow.accounts.require(account_id)
        rows = uow.rebalancing.trigger_evaluations(account_id, limit=limit)
    return [TriggerEvaluationOut.model_validate(r, from_attributes=True) for r in rows]
