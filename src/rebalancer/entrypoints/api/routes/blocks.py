"""Block orders: one venue order per instrument and side across accounts (read and cancel)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from rebalancer.entrypoints.api.deps import ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES
from rebalancer.entrypoints.api.idempotency import IdempotencyKey, post_idempotent
from rebalancer.entrypoints.api.schemas import CancelRequest
from rebalancer.service_layer.handlers.blocks import block_view, cancel_block
from rebalancer.service_layer.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


class BlockChildOut(BaseModel):
    """One account's order inside a block."""

    order_id: uuid.UUID
    account_id: str
    quantity: Decimal = Field(description="Shares the account's order asks for.")
    allocated_quantity: Decimal = Field(description="Shares of the block's fills allocated.")
    status: str


class BlockAllocationOut(BaseModel):
    """The share of one venue fill allocated to one child."""

    order_id: uuid.UUID
    account_id: str
    quantity: Decimal = Field(description="Shares.")


class BlockFillOut(BaseModel):
    """A venue fill of the block and how it was allocated."""

    report_id: str
    kind: str
    quantity: Decimal = Field(description="Shares.")
    price: Decimal | None = Field(description="Currency per share.")
    outcome: str
    venue_time: datetime
    allocations: list[BlockAllocationOut]


class BlockOut(BaseModel):
    """A block order, its children and its fills allocated."""

    id: uuid.UUID
    instrument: str
    side: str
    quantity: Decimal = Field(description="Shares (sum of the children).")
    filled_quantity: Decimal = Field(description="Shares.")
    avg_fill_price: Decimal | None = Field(description="Currency per share.")
    status: str
    limit_price: Decimal | None = Field(description="Currency per share; None: market.")
    time_in_force: str
    arrival_price: Decimal | None = Field(description="Currency per share.")
    reason: str | None
    children: list[BlockChildOut]
    fills: list[BlockFillOut]
    created_at: datetime
    updated_at: datetime


@router.get("/blocks/{block_id}", response_model=BlockOut, tags=["orders"])
def get_block(block_id: uuid.UUID, ctx: ReadCtx) -> BlockOut:
    """A block order with its children (allocated shares, status) and its venue fills with
    each child's allocation; 404 naming the id when unknown (or another tenant's)."""
    with ctx.uow() as uow:
        return BlockOut.model_validate(block_view(uow, block_id))


@router.post(
    "/blocks/{block_id}/cancel",
    response_model=BlockOut,
    tags=["orders"],
    summary="Cancel a working block order (one cancel to the venue for all its accounts)",
)
def cancel_block_route(
    block_id: uuid.UUID,
    request: Request,
    ctx: TradeCtx,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> Any:
    """Sends one cancel for the block; its working children become ``cancel_requested`` and
    follow the venue's answer (fills that arrive before the cancel are still allocated). 409
    when the block is finished. Asking again while the cancel is pending sends nothing more;
    with an ``Idempotency-Key`` a retry returns the first response."""
    req = body or CancelRequest()

    def work(uow: UnitOfWork) -> BlockOut:
        return BlockOut.model_validate(cancel_block(uow, block_id, ctx.actor, req.reason))

    return post_idempotent(request, ctx, idempotency_key, req, work, work_commits=True)
