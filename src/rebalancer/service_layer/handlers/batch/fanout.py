"""Fan-out and progress of a batch rebalance (see the package docstring)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
import structlog

from rebalancer.adapters.repositories import bulk
from rebalancer.adapters.repositories.batches import BatchRepository
from rebalancer.contracts import (
    Envelope,
    EventType,
    RebalanceTriggeredV1,
    StatusEntity,
    StatusUpdatedV1,
    new_event,
)
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

BATCH_TOPIC = "persistent://public/default/rebalancer.rebalance-batch"
"""Topic of batch items: ``rebalance_triggered`` v1 events of batch rebalances, kept apart from
live triggers so that a 10,000-account batch does not delay them."""

BATCH_CONSUMER = "batch"
"""Name under which batch workers record processed event ids."""


@dataclass(frozen=True)
class BatchStarted:
    """Result of :func:`start_batch` (counts are accounts)."""

    batch_id: uuid.UUID
    model_id: str
    model_version: int
    total: int
    queued: int
    skipped: int
    superseded: int = 0
    """Recommendations awaiting approval rejected and recomputed (``supersede_pending``)."""


def status_event(
    tenant_id: str,
    rid: uuid.UUID,
    account_id: str,
    status: str,
    previous: str | None,
    detail: str | None = None,
) -> Envelope:
    """A ``status_updated`` v1 event of rebalance ``rid`` (keyed by the account)."""
    return new_event(
        EventType.STATUS_UPDATED,
        StatusUpdatedV1(
            entity=StatusEntity.REBALANCE,
            entity_id=str(rid),
            account_id=account_id,
            status=status,
            previous=previous,
            detail=detail,
        ),
        tenant_id=tenant_id,
        key=account_id,
        correlation_id=str(rid),
    )


def start_batch(
    uow: UnitOfWork,
    model_id: str,
    *,
    actor: str,
    reason: str = "model_change",
    priority: int = 0,
    supersede_pending: bool = False,
) -> BatchStarted:
    """Open a rebalance per follower of ``model_id`` and queue them for the workers.

    A follower whose open rebalance is still ``requested`` joins the batch with it; one whose
    rebalance awaits approval is skipped, unless ``supersede_pending``: its recommendation
    (computed before this change, e.g. for the model's previous version) is then rejected
    with the reason ``superseded by batch <id>`` and a new rebalance queued. One approved or
    trading is always skipped (its orders are in flight). Does not commit (the caller
    commits, with its idempotency record if any).

    Raises
    ------
    NotFound
        When the model does not exist for the tenant.
    """
    model = uow.models.get(model_id).model
    repo = BatchRepository(uow.conn, uow.tenant_id)
    followers = repo.lock_followers(model_id)
    open_rebalances = repo.open_rebalances_of_followers(model_id)
    batch_id = uuid.uuid4()
    tag = f"batch:{batch_id}"
    reasons = [f"{reason}:{model_id}:v{model.version}", tag]
    repo.create(batch_id, model_id, model.version, reasons, actor)
    as_of = uow.market.as_of() or date.today()
    new_rows: list[dict[str, Any]] = []
    joined: list[uuid.UUID] = []
    previous_batches: set[uuid.UUID] = set()
    events: list[tuple[Envelope, str | None]] = []
    skipped = 0
    superseded: set[uuid.UUID] = set()
    if supersede_pending:
        pending = [row.id for row in open_rebalances.values() if row.status == "pending_approval"]
        superseded = set(repo.reject_pending(pending))
        detail = f"superseded by batch {batch_id}"
        for row in open_rebalances.values():
            if row.id in superseded:
                events.append(
                    (
                        status_event(
                            uow.tenant_id, row.id, row.account_id, "rejected", row.status, detail
                        ),
                        None,
                    )
                )
    for account_id in followers:
        row = open_rebalances.get(account_id)
        if row is not None and row.id in superseded:
            row = None  # rejected above: a new rebalance from the account's state
        if row is not None and row.status != "requested":
            skipped += 1  # awaiting a person's approval, or its orders are in flight
            continue
        if row is None:
            rid = uuid.uuid4()
            new_rows.append(
                {
                    "id": rid,
                    "account_id": account_id,
                    "status": "requested",
                    "reasons": reasons,
                    "priority": priority,
                    "batch_id": batch_id,
                }
            )
            events.append((status_event(uow.tenant_id, rid, account_id, "requested", None), None))
        else:
            rid = row.id
            joined.append(rid)
            if row.batch_id is not None:
                previous_batches.add(row.batch_id)
        item = RebalanceTriggeredV1(
            account_id=account_id,
            rebalance_id=str(rid),
            reasons=reasons,
            priority=priority,
            as_of=as_of,
        )
        env = new_event(
            EventType.REBALANCE_TRIGGERED,
            item,
            tenant_id=uow.tenant_id,
            key=account_id,
            correlation_id=str(rid),
        )
        events.append((env, BATCH_TOPIC))
    repo.insert_rebalances(new_rows)
    repo.attach(joined, batch_id, tag)
    repo.finish_if_done(sorted(previous_batches))
    bulk.add_outbox_many(uow.conn, events)
    queued = len(new_rows) + len(joined)
    repo.set_counts(batch_id, len(followers), queued, skipped)
    audit = {"batch_id": str(batch_id), "superseded": len(superseded)}
    uow.audit.record(actor, "batch_rebalance", "model", model_id, audit)
    log.info(
        "batch.started",
        batch_id=str(batch_id),
        model_id=model_id,
        queued=queued,
        skipped=skipped,
        superseded=len(superseded),
    )
    return BatchStarted(
        batch_id, model_id, model.version, len(followers), queued, skipped, len(superseded)
    )


def batch_progress(uow: UnitOfWork, batch_id: uuid.UUID) -> dict[str, Any]:
    """Progress of a batch: counts by rebalance status, times and accounts per second.

    ``done`` counts the batch's rebalances no longer ``requested``; ``elapsed_s`` runs from
    ``started_at`` to ``finished_at`` (or to now while running).
    """
    repo = BatchRepository(uow.conn, uow.tenant_id)
    row = repo.get(batch_id)
    counts = repo.status_counts(batch_id)
    now = uow.conn.execute(sa.select(sa.func.now())).scalar_one()
    end = row.finished_at or now
    elapsed = max((end - row.started_at).total_seconds(), 1e-6)
    done = sum(n for s, n in counts.items() if s != "requested")
    return {
        "id": row.id,
        "model_id": row.model_id,
        "model_version": row.model_version,
        "status": row.status,
        "reasons": list(row.reasons),
        "total": row.total,
        "queued": row.queued,
        "skipped": row.skipped,
        "done": done,
        "counts": counts,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "elapsed_s": round(elapsed, 3),
        "accounts_per_s": round(done / elapsed, 3),
    }
