"""Execution: batch approvals (block orders), the status stream, re-optimizing a remainder and
execution quality."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from rebalancer.entrypoints.api.deps import ApproveCtx, ReadCtx, TradeCtx
from rebalancer.entrypoints.api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from rebalancer.entrypoints.api.schemas import ID_PATTERN, ExecutionFields, OrderOut
from rebalancer.service_layer.handlers import status_stream
from rebalancer.service_layer.handlers.closing import reoptimize_remainder
from rebalancer.service_layer.handlers.quality import execution_quality
from rebalancer.service_layer.handlers.settling import account_cash
from rebalancer.service_layer.handlers.trading import approve_many

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

HEARTBEAT_S = 15.0
POLL_S = 0.25


class BatchApproval(ExecutionFields):
    """Body of ``POST /v1/approvals``."""

    recommendation_ids: list[uuid.UUID] = Field(min_length=1, max_length=500)


class BatchApprovalOut(BaseModel):
    """Orders per approved recommendation (first-wave orders shared by accounts are blocked)."""

    orders: dict[str, list[OrderOut]]


class ReoptimizeOut(BaseModel):
    rebalance_id: uuid.UUID = Field(description="The follow-up rebalance.")
    remainder_of: uuid.UUID
    status: str
    recommendation_id: uuid.UUID | None


@router.post(
    "/approvals",
    response_model=BatchApprovalOut,
    tags=["rebalancing"],
    summary="Approve several recommendations at once, trading shared instruments as blocks",
)
def approve_batch(body: BatchApproval, ctx: ApproveCtx) -> BatchApprovalOut:
    """All or nothing; recommendations approved before keep (and return) their orders."""
    policy = body.policy()
    with ctx.uow() as uow:
        result = approve_many(uow, body.recommendation_ids, ctx.actor, execution=policy)
    return BatchApprovalOut(
        orders={k: [OrderOut.model_validate(o) for o in v] for k, v in result.items()}
    )


@router.post(
    "/rebalances/{rebalance_id}/reoptimize",
    response_model=ReoptimizeOut,
    tags=["rebalancing"],
    summary="Re-optimize what a partially complete rebalance left undone",
)
def reoptimize(rebalance_id: uuid.UUID, ctx: TradeCtx) -> ReoptimizeOut:
    """Opens (once) a follow-up rebalance and recommends it from the current lots and cash;
    the old orders are never re-sent. 409 unless the rebalance is partially_complete/failed."""
    with ctx.uow() as uow:
        new_id = reoptimize_remainder(uow, ctx.runtime.optimizer, rebalance_id)
    with ctx.uow() as uow:
        row = uow.rebalancing.get_rebalance(new_id)
        rec = uow.rebalancing.recommendation_for(new_id)
    return ReoptimizeOut(
        rebalance_id=new_id,
        remainder_of=rebalance_id,
        status=row.status,
        recommendation_id=rec.id if rec is not None else None,
    )


class CashOut(BaseModel):
    """An account's cash in its currency: settled, and what fills not yet settled will move."""

    account_id: str
    currency: str
    settled: Decimal = Field(description="Settled cash (account currency).")
    unsettled_purchases: Decimal = Field(
        description="Cost of buy fills not settled yet (account currency); owed at settlement."
    )
    unsettled_proceeds: Decimal = Field(
        description="Proceeds of sell fills not settled yet (account currency); become settled "
        "cash at settlement and are never spent before (good-faith guard)."
    )
    buying_power: Decimal = Field(
        description="settled - unsettled_purchases: what a cash account may spend now."
    )


@router.get(
    "/accounts/{account_id}/cash",
    response_model=CashOut,
    tags=["accounts"],
    summary="Settled and unsettled cash of an account, and its buying power",
)
def get_account_cash(
    account_id: Annotated[str, Path(pattern=ID_PATTERN, description="Account id.")],
    ctx: ReadCtx,
) -> CashOut:
    """Settled cash, unsettled purchases and proceeds (kept current on every fill and
    settlement) and the good-faith buying power used to size buys."""
    with ctx.uow() as uow:
        cash = account_cash(uow, account_id, ctx.runtime.settings.base_currency)
    return CashOut(account_id=account_id, **cash)


@router.get("/execution-quality", tags=["orders"], summary="Execution quality report")
def get_execution_quality(
    ctx: ReadCtx,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Implementation shortfall (bps vs arrival), slippage vs the optimizer's cost estimate,
    fill rate and completed share of rebalances (target > 95 %), total, by instrument and by
    day, for orders created on ``start..end`` (UTC; default: the last 30 days)."""
    end = end or datetime.now(UTC).date()
    start = start or max(date.min, end - timedelta(days=min(30, (end - date.min).days)))
    with ctx.uow() as uow:
        return execution_quality(uow, start, end)


SSE_MEDIA_TYPE = "text/event-stream"

SSE_EXAMPLE = (
    "retry: 1000\n\n"
    "id: 812-4711\nevent: status\n"
    'data: {"id": "812-4711", "entity": "order", "entity_id": "...", "account_id": "acct-1", '
    '"status": "filled", "previous": "partially_filled", "detail": null, '
    '"occurred_at": "2026-11-26T07:00:00+00:00", "correlation_id": "...", "event_id": "..."}'
    "\n\n"
)


@router.get(
    "/stream",
    tags=["rebalancing"],
    summary="Server-sent events: status changes of rebalances, orders and settlements",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "An endless `text/event-stream` (until the client disconnects, or `max_events` "
                "/ `idle_timeout_s` end it): one `event: status` per change with the cursor as "
                "`id:` and the change as JSON `data:`; a `: heartbeat` comment every 15 s."
            ),
            "content": {
                SSE_MEDIA_TYPE: {
                    "schema": {"type": "string", "format": "event-stream"},
                    "example": SSE_EXAMPLE,
                }
            },
        },
        406: {
            "model": ErrorBody,
            "description": "The request's Accept header does not name text/event-stream.",
        },
    },
)
async def stream(
    request: Request,
    ctx: ReadCtx,
    account_id: str | None = None,
    entity: Annotated[str | None, Query(pattern="^(rebalance|order|settlement)$")] = None,
    entity_id: str | None = None,
    correlation_id: str | None = None,
    since: Annotated[str | None, Query(description="Cursor '<txid>-<id>' to resume after.")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
    max_events: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    idle_timeout_s: Annotated[float | None, Query(gt=0, le=3600)] = None,
    accept: Annotated[
        str | None,
        Header(description="Must name text/event-stream (browsers' EventSource send it)."),
    ] = None,
) -> StreamingResponse:
    """``text/event-stream`` of the tenant's status changes, each ``event: status`` with the
    cursor as ``id:`` and the change as JSON ``data:``. Resume with ``Last-Event-ID`` (or
    ``since``); without either the stream starts now. Works behind several API processes (it
    reads committed outbox rows, not an in-memory bus). ``max_events`` / ``idle_timeout_s``
    end the stream (for scripts); a comment line is sent every 15 s as a heartbeat.

    The request must accept ``text/event-stream`` by name (406 otherwise): a generic client
    that reads the whole body would wait on the endless stream forever."""
    if SSE_MEDIA_TYPE not in (accept or "").lower():
        raise ApiError(
            406,
            "not_acceptable",
            f"this endpoint is an endless {SSE_MEDIA_TYPE} stream; send "
            f"'Accept: {SSE_MEDIA_TYPE}' (EventSource does; with curl add -N -H 'Accept: "
            f"{SSE_MEDIA_TYPE}')",
            ["header.accept"],
        )
    text = last_event_id or since
    with ctx.uow() as uow:
        cursor = status_stream.parse_cursor(text) if text else status_stream.head(uow)
    flt = status_stream.StatusFilter(account_id, entity, entity_id, correlation_id)

    def fetch(after: status_stream.Cursor) -> tuple[list[dict[str, Any]], status_stream.Cursor]:
        with ctx.uow() as uow:
            return status_stream.read_status_changes(uow, after, flt)

    async def events() -> AsyncIterator[str]:
        nonlocal cursor
        sent, last_event, last_beat = 0, time.monotonic(), time.monotonic()
        yield "retry: 1000\n\n"
        while True:
            batch, cursor = await run_in_threadpool(fetch, cursor)
            for ev in batch:
                yield f"id: {ev['id']}\nevent: status\ndata: {json.dumps(ev)}\n\n"
                sent += 1
                last_event = time.monotonic()
                if max_events is not None and sent >= max_events:
                    return
            now = time.monotonic()
            if idle_timeout_s is not None and now - last_event > idle_timeout_s:
                return
            if now - last_beat > HEARTBEAT_S:
                last_beat = now
                yield ": heartbeat\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
