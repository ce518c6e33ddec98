"""Controlling a batch rebalance after its fan-out: approving what it recommended, chunk by
chunk, or cancelling what no worker computed yet."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from rebalancer.adapters.repositories import bulk
from rebalancer.adapters.repositories.batches import BatchRepository
from rebalancer.contracts import Envelope
from rebalancer.domain.execution import ExecutionPolicy
from rebalancer.domain.rebalance import REQUESTED, RebalanceStatus
from rebalancer.service_layer.handlers.batch.fanout import status_event
from rebalancer.service_layer.handlers.trading import approve_all
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchCancelled:
    """Result of :func:`cancel_batch` (counts are rebalances changed by this call)."""

    batch_id: uuid.UUID
    cancelled: int
    """Rebalances still ``requested`` that became ``cancelled``."""
    rejected: int
    """Recommendations awaiting approval that were rejected (``reject_pending``)."""
    stopped: bool
    """Whether the batch was running and is now ``cancelled``."""


def cancel_batch(
    uow: UnitOfWork, batch_id: uuid.UUID, *, actor: str, reject_pending: bool = False
) -> BatchCancelled:
    """Cancel a batch: its rebalances no worker has computed yet finish as ``cancelled``.

    With ``reject_pending`` its recommendations still awaiting approval are rejected too (the
    reason ``batch <id> cancelled``), so nothing of the batch is left to approve, except one an
    approval holds at that moment (it is about to trade). Approved or trading ones are never
    touched (their orders are in flight: cancel those one by one).
    Workers skip the cancelled rebalances when their messages arrive (a chunk computes only
    rebalances still ``requested``); a chunk computing one of them meanwhile is waited for.
    A running batch becomes ``cancelled``. Repeating the call changes nothing more. Each
    change is a ``status_updated`` event. Does not commit (the caller commits, with its
    idempotency record if any).

    Raises
    ------
    NotFound
        When the batch is not the tenant's.
    """
    repo = BatchRepository(uow.conn, uow.tenant_id)
    repo.get(batch_id)  # 404 first; locked last (after its accounts, as the workers do)
    requested = [r for r in repo.lock_for_cancel(batch_id) if r.status == REQUESTED]
    repo.cancel_requested([r.id for r in requested])
    detail = f"batch {batch_id} cancelled"
    events: list[tuple[Envelope, str | None]] = [
        (status_event(uow.tenant_id, r.id, r.account_id, "cancelled", REQUESTED, detail), None)
        for r in requested
    ]
    rejected: set[uuid.UUID] = set()
    if reject_pending:  # one being approved right now is left to trade (SKIP LOCKED)
        pending = repo.pending_of(batch_id)
        rejected = set(repo.reject_pending([r.id for r in pending]))
        previous = str(RebalanceStatus.PENDING_APPROVAL)
        events += [
            (status_event(uow.tenant_id, r.id, r.account_id, "rejected", previous, detail), None)
            for r in pending
            if r.id in rejected
        ]
    bulk.add_outbox_many(uow.conn, events)
    stopped = repo.mark_cancelled(batch_id)
    result = BatchCancelled(batch_id, len(requested), len(rejected), stopped)
    uow.audit.record(
        actor,
        "cancel_batch",
        "batch",
        str(batch_id),
        {"cancelled": result.cancelled, "rejected": result.rejected, "stopped": stopped},
    )
    log.info("batch.cancelled", batch_id=str(batch_id), cancelled=result.cancelled)
    return result


@dataclass(frozen=True)
class BatchApproved:
    """Result of :func:`approve_batch` (counts are recommendations and orders of this call)."""

    batch_id: uuid.UUID
    approved: int
    orders: int
    """Orders created (shared instruments of a chunk go to the venue as block orders)."""
    remaining: int
    """The batch's recommendations still awaiting approval after this call."""


def approve_batch(
    new_uow: Callable[[], UnitOfWork],
    batch_id: uuid.UUID,
    *,
    actor: str,
    execution: ExecutionPolicy | None = None,
    max_accounts: int = 500,
    chunk_size: int = 100,
) -> BatchApproved:
    """Approve up to ``max_accounts`` of a batch's recommendations awaiting approval.

    Each chunk of ``chunk_size`` is one transaction of
    :func:`~rebalancer.service_layer.handlers.trading.approve_all` (orders exactly once, the
    chunk's first-wave orders of one instrument and side in several accounts as one block
    order), so a call's time is bounded and a failure loses at most its chunk: call again
    until ``remaining`` is 0. Chunks are taken with ``SKIP LOCKED``: concurrent calls approve
    different recommendations. ``new_uow`` opens a unit of work per transaction.

    Raises
    ------
    NotFound
        When the batch is not the tenant's.
    """
    with new_uow() as uow:
        BatchRepository(uow.conn, uow.tenant_id).get(batch_id)  # 404
    approved = orders = 0
    while approved < max_accounts:
        with new_uow() as uow:
            repo = BatchRepository(uow.conn, uow.tenant_id)
            ids = repo.next_pending(batch_id, min(chunk_size, max_accounts - approved))
            if not ids:
                break
            orders += len(approve_all(uow, ids, actor, execution=execution))
        approved += len(ids)
        log.info("batch.approved_chunk", batch_id=str(batch_id), approved=approved)
    with new_uow() as uow:
        remaining = BatchRepository(uow.conn, uow.tenant_id).count_pending(batch_id)
        if approved:
            detail = {"approved": approved, "orders": orders, "remaining": remaining}
            uow.audit.record(actor, "approve_batch", "batch", str(batch_id), detail)
            uow.commit()
    return BatchApproved(batch_id, approved, orders, remaining)
