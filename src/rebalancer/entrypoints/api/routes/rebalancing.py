"""Rebalances, recommendations, approvals and orders."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, status
from pydantic import Field

from rebalancer.entrypoints.api.deps import ApproveCtx, ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.idempotency import IdempotencyKey, post_idempotent
from rebalancer.entrypoints.api.schemas import (
    ID_PATTERN,
    ApprovalOut,
    CancelRequest,
    OrderOut,
    RebalanceAccepted,
    RebalanceOut,
    RebalanceRequest,
    RecommendationOut,
    RejectionOut,
    RejectRequest,
)
from rebalancer.service_layer.handlers.closing import follow_up_links
from rebalancer.service_layer.handlers.monitoring import manual_request
from rebalancer.service_layer.handlers.recommending import recommendation_view
from rebalancer.service_layer.handlers.trading import approve, cancel_order, order_view, reject
from rebalancer.service_layer.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="Account id.")]


@router.post(
    "/accounts/{account_id}/rebalance",
    response_model=RebalanceAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["rebalancing"],
    summary="Trigger a rebalance of the account (manual trigger)",
)
def trigger_rebalance(
    account_id: AccountId,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[RebalanceRequest | None, Body()] = None,
) -> Any:
    """Open a rebalance (or join the account's open one); a worker computes the recommendation.

    Follow it with ``GET /v1/rebalances/{rebalance_id}``. With an ``Idempotency-Key`` a retry
    returns the first response and does nothing more.
    """
    req = body or RebalanceRequest()

    def work(uow: UnitOfWork) -> RebalanceAccepted:
        rid, created = manual_request(
            uow, account_id, ctx.actor, req.reason, req.priority, idempotency_key=idempotency_key
        )
        uow.audit.record(ctx.actor, "rebalance", "account", account_id, {"rebalance_id": rid})
        return RebalanceAccepted(rebalance_id=rid, account_id=account_id, created=created)

    return post_idempotent(
        request, ctx, idempotency_key, req, work, status_code=202, work_commits=False
    )


class RebalanceDetailOut(RebalanceOut):
    """A rebalance with its place in a chain of follow-ups (closing the loop)."""

    parent_rebalance_id: uuid.UUID | None = Field(
        description="The partly done rebalance this one completes (None: an original)."
    )
    remainder_round: int = Field(description="0 for an original, parent's + 1 for a follow-up.")
    follow_up_rebalance_id: uuid.UUID | None = Field(
        description="The follow-up opened when this one ended partly done, if any."
    )


@router.get("/rebalances/{rebalance_id}", response_model=RebalanceDetailOut, tags=["rebalancing"])
def get_rebalance(rebalance_id: uuid.UUID, ctx: ReadCtx) -> RebalanceDetailOut:
    """Status and reasons of a rebalance, its recommendation, its orders and its follow-up
    links (``parent_rebalance_id``, ``remainder_round``, ``follow_up_rebalance_id``)."""
    with ctx.uow() as uow:
        row = uow.rebalancing.get_rebalance(rebalance_id)
        rec = uow.rebalancing.recommendation_for(rebalance_id)
        orders = uow.rebalancing.orders(rebalance_id=rebalance_id, limit=None)
        links = follow_up_links(uow, row)
    return RebalanceDetailOut(
        **links,
        id=row.id,
        account_id=row.account_id,
        status=row.status,
        reasons=list(row.reasons),
        priority=row.priority,
        created_at=row.created_at,
        updated_at=row.updated_at,
        recommendation_id=rec.id if rec is not None else None,
        recommendation_status=rec.status if rec is not None else None,
        orders=[OrderOut.model_validate(order_view(o)) for o in orders],
    )


@router.get(
    "/recommendations/{recommendation_id}",
    response_model=RecommendationOut,
    tags=["rebalancing"],
)
def get_recommendation(recommendation_id: uuid.UUID, ctx: ReadCtx) -> RecommendationOut:
    """A recommendation with the optimizer's full analysis (trades, lots, costs, risk)."""
    with ctx.uow() as uow:
        row = uow.rebalancing.get_recommendation(recommendation_id)
    return RecommendationOut.model_validate(recommendation_view(row))


@router.post(
    "/recommendations/{recommendation_id}/approve",
    response_model=ApprovalOut,
    tags=["rebalancing"],
    summary="Approve a recommendation: create and send its orders (exactly once)",
)
def approve_recommendation(
    recommendation_id: uuid.UUID,
    request: Request,
    ctx: ApproveCtx,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Create the recommendation's orders; approving again returns the same orders.

    The approval is written to the audit log. 409 when the recommendation is not pending.
    """

    def work(uow: UnitOfWork) -> ApprovalOut:
        orders = approve(uow, recommendation_id, ctx.actor)
        return ApprovalOut(
            recommendation_id=recommendation_id,
            orders=[OrderOut.model_validate(o) for o in orders],
        )

    return post_idempotent(request, ctx, idempotency_key, None, work, work_commits=True)


@router.post(
    "/recommendations/{recommendation_id}/reject",
    response_model=RejectionOut,
    tags=["rebalancing"],
    summary="Reject a recommendation pending approval: it never trades",
)
def reject_recommendation(
    recommendation_id: uuid.UUID,
    request: Request,
    ctx: ApproveCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[RejectRequest | None, Body()] = None,
) -> Any:
    """Finish the recommendation's rebalance as ``rejected`` (a ``status_updated`` event with
    the reason, an audit record); the account's next trigger or batch starts a new one.
    Rejecting again returns the same answer. 409 when it was approved (cancel its orders) or
    is a ``no_trade`` decision; 404 when it is not the tenant's."""
    req = body or RejectRequest()

    def work(uow: UnitOfWork) -> RejectionOut:
        status_ = reject(uow, recommendation_id, ctx.actor, req.reason)
        return RejectionOut(recommendation_id=recommendation_id, status=status_)

    return post_idempotent(request, ctx, idempotency_key, req, work, work_commits=True)


@router.get("/orders", response_model=list[OrderOut], tags=["orders"])
def list_orders(
    ctx: ReadCtx,
    account_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    recommendation_id: uuid.UUID | None = None,
    rebalance_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
) -> list[OrderOut]:
    """The tenant's orders, oldest first, optionally filtered."""
    with ctx.uow() as uow:
        if account_id is not None:
            uow.accounts.require(account_id)
        rows = uow.rebalancing.orders(
            account_id=account_id,
            recommendation_id=recommendation_id,
            rebalance_id=rebalance_id,
            limit=limit,
        )
    return [OrderOut.model_validate(order_view(r)) for r in rows]


@router.get("/orders/{order_id}", response_model=OrderOut, tags=["orders"])
def get_order(order_id: uuid.UUID, ctx: ReadCtx) -> OrderOut:
    """One order; 404 naming the id when unknown."""
    with ctx.uow() as uow:
        return OrderOut.model_validate(order_view(uow.rebalancing.get_order(order_id)))


@router.post("/orders/{order_id}/cancel", response_model=OrderOut, tags=["orders"])
def cancel_order_route(
    order_id: uuid.UUID,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> Any:
    """Cancel a working order (a never-sent one is cancelled at once); 409 when terminal, or
    when it works inside a block (the message names ``POST /v1/blocks/{block_id}/cancel``).
    With an ``Idempotency-Key`` a retry returns the first response."""
    req = body or CancelRequest()

    def work(uow: UnitOfWork) -> OrderOut:
        return OrderOut.model_validate(cancel_order(uow, order_id, ctx.actor, req.reason))

    return post_idempotent(request, ctx, idempotency_key, req, work, work_commits=True)
