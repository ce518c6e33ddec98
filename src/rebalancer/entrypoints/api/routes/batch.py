"""Batch rebalance of every account following a model, and its progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from rebalancer.entrypoints.api.deps import ApproveCtx, ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.idempotency import IdempotencyKey, post_idempotent
from rebalancer.entrypoints.api.schemas import ID_PATTERN, ExecutionFields
from rebalancer.service_layer.handlers.batch import (
    approve_batch,
    batch_progress,
    cancel_batch,
    start_batch,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

ModelId = Annotated[str, Path(pattern=ID_PATTERN, description="Model id.")]


class BatchRequest(BaseModel):
    """Optional body of ``POST /v1/models/{model_id}/rebalance``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="model_change",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Why; recorded on every rebalance as `<reason>:<model>:v<version>`.",
    )
    priority: int = Field(default=0, ge=0, le=100, description="Higher is served first.")
    supersede_pending: bool = Field(
        default=False,
        description="Reject the recommendations still awaiting approval (computed before this "
        "change) and recompute those accounts in the batch; otherwise they are skipped.",
    )


class BatchAccepted(BaseModel):
    """A batch was started; follow it at ``GET /v1/batches/{batch_id}``."""

    batch_id: uuid.UUID
    model_id: str
    model_version: int
    total: int = Field(description="Accounts following the model.")
    queued: int = Field(description="Accounts whose rebalance was queued for the workers.")
    skipped: int = Field(
        description="Accounts skipped: their open rebalance is pending approval, approved or "
        "trading (approve its recommendation, or let its orders finish, first)."
    )
    superseded: int = Field(
        default=0,
        description="Recommendations awaiting approval rejected and recomputed "
        "(`supersede_pending`); counted in `queued`.",
    )


class BatchOut(BaseModel):
    """Progress of a batch."""

    id: uuid.UUID
    model_id: str
    model_version: int
    status: str = Field(description="`running`, `finished` or `cancelled`.")
    reasons: list[str]
    total: int
    queued: int
    skipped: int
    done: int = Field(description="Queued rebalances computed so far (any status but requested).")
    counts: dict[str, int] = Field(
        description="Rebalance status -> accounts, e.g. requested, pending_approval, no_trade, "
        "failed."
    )
    started_at: datetime
    finished_at: datetime | None
    elapsed_s: float = Field(description="Seconds from start to finish (or to now).")
    accounts_per_s: float = Field(description="done / elapsed_s.")


@router.post(
    "/models/{model_id}/rebalance",
    response_model=BatchAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["rebalancing"],
    summary="Rebalance every account following the model (batch, computed by workers)",
)
def rebalance_model(
    model_id: ModelId,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[BatchRequest | None, Body()] = None,
) -> Any:
    """Open one rebalance per account following the model and queue them on Pulsar.

    Worker processes compute the recommendations in parallel; follow the progress with
    ``GET /v1/batches/{batch_id}``. With an ``Idempotency-Key`` a retry returns the first
    response and starts nothing.
    """
    req = body or BatchRequest()

    def work(uow: UnitOfWork) -> BatchAccepted:
        b = start_batch(
            uow,
            model_id,
            actor=ctx.actor,
            reason=req.reason,
            priority=req.priority,
            supersede_pending=req.supersede_pending,
        )
        return BatchAccepted(
            batch_id=b.batch_id,
            model_id=b.model_id,
            model_version=b.model_version,
            total=b.total,
            queued=b.queued,
            skipped=b.skipped,
            superseded=b.superseded,
        )

    return post_idempotent(
        request, ctx, idempotency_key, req, work, status_code=202, work_commits=False
    )


@router.get("/batches/{batch_id}", response_model=BatchOut, tags=["rebalancing"])
def get_batch(batch_id: uuid.UUID, ctx: ReadCtx) -> BatchOut:
    """Counts by status, start and finish times and throughput of a batch."""
    with ctx.uow() as uow:
        return BatchOut.model_validate(batch_progress(uow, batch_id))


class BatchCancel(BaseModel):
    """Optional body of ``POST /v1/batches/{batch_id}/cancel``."""

    model_config = ConfigDict(extra="forbid")

    reject_pending: bool = Field(
        default=False,
        description="Also reject the batch's recommendations still awaiting approval, so "
        "nothing of it is left to approve.",
    )


class BatchCancelOut(BatchOut):
    """A batch after cancelling: its progress, and what this call changed."""

    cancelled: int = Field(description="Rebalances not yet computed that became `cancelled`.")
    rejected: int = Field(description="Recommendations awaiting approval rejected now.")


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchCancelOut,
    tags=["rebalancing"],
    summary="Cancel a batch: the accounts not computed yet are not rebalanced",
)
def cancel_batch_route(
    batch_id: uuid.UUID,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[BatchCancel | None, Body()] = None,
) -> Any:
    """The batch's rebalances no worker has computed yet finish as `cancelled`; with
    `reject_pending`, its recommendations awaiting approval are rejected. Approved or trading
    ones keep trading (cancel their orders one by one). Repeating it changes nothing more;
    with an ``Idempotency-Key`` a retry returns the first response. 404 when the batch is not
    the tenant's."""
    req = body or BatchCancel()

    def work(uow: UnitOfWork) -> BatchCancelOut:
        done = cancel_batch(uow, batch_id, actor=ctx.actor, reject_pending=req.reject_pending)
        view = batch_progress(uow, batch_id)
        return BatchCancelOut(**view, cancelled=done.cancelled, rejected=done.rejected)

    return post_idempotent(request, ctx, idempotency_key, req, work, work_commits=False)


class BatchApprove(ExecutionFields):
    """Optional body of ``POST /v1/batches/{batch_id}/approve``."""

    max_accounts: int = Field(
        default=500, ge=1, le=5000, description="Most recommendations this call approves."
    )
    chunk_size: int = Field(
        default=100,
        ge=1,
        le=500,
        description="Recommendations per transaction (their shared instruments trade as "
        "block orders).",
    )


class BatchApproveOut(BatchOut):
    """A batch after approving part of it: its progress, and what this call did."""

    approved: int = Field(description="Recommendations approved by this call.")
    orders: int = Field(description="Orders they created.")
    remaining: int = Field(description="Recommendations still awaiting approval: call again.")


@router.post(
    "/batches/{batch_id}/approve",
    response_model=BatchApproveOut,
    tags=["rebalancing"],
    summary="Approve a batch's recommendations, a chunk per transaction",
)
def approve_batch_route(
    batch_id: uuid.UUID,
    request: Request,
    ctx: ApproveCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[BatchApprove | None, Body()] = None,
) -> Any:
    """Approve up to `max_accounts` of the batch's recommendations awaiting approval, in
    transactions of `chunk_size` (orders exactly once; a chunk's shared instruments as block
    orders); call again until `remaining` is 0. Concurrent calls approve different
    recommendations. With an ``Idempotency-Key`` a retry returns the first response. 404 when
    the batch is not the tenant's."""
    req = body or BatchApprove()
    policy = req.policy()

    def work(_: UnitOfWork) -> BatchApproveOut:
        done = approve_batch(
            ctx.uow,
            batch_id,
            actor=ctx.actor,
            execution=policy,
            max_accounts=req.max_accounts,
            chunk_size=req.chunk_size,
        )
        with ctx.uow() as uow:
            view = batch_progress(uow, batch_id)
        return BatchApproveOut(
            **view, approved=done.approved, orders=done.orders, remaining=done.remaining
        )

    return post_idempotent(request, ctx, idempotency_key, req, work, work_commits=True)
