"""Batch rebalance: rebalance every account following a model (after a model change).

Fan-out (:func:`start_batch`, one transaction): lock the model's followers, open one
``requested`` rebalance per account (or join the account's rebalance that is still
``requested``; accounts whose open rebalance is further along are *skipped* and counted), and
queue one ``rebalance_triggered`` v1 event per account on the dedicated topic
:data:`BATCH_TOPIC`, all with multi-row inserts. The outbox relay publishes them to Pulsar.

Work (:func:`recommend_chunk`): any number of worker processes consume that topic on one Shared
subscription and take the messages in chunks. A chunk is handled in one transaction: one
set-based read (the accounts with their lots, cash and sleeves locked and loaded by one
statement, then models, instruments, quotes and cached closes for the whole chunk), one
``analyze_many`` call and one bulk write (``COPY`` and multi-row statements). Each result
is written once: the rebalance rows are locked and only those still ``requested`` are
computed, and event ids are recorded in ``processed_events`` in the same transaction. A worker
that dies mid-chunk commits nothing; Pulsar redelivers its unacknowledged messages to the
other workers.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog

from rebalancer.adapters.repositories import bulk
from rebalancer.adapters.repositories.batches import BatchRepository
from rebalancer.analytics.requests import involved_instruments, make_request
from rebalancer.contracts import (
    Decision,
    Envelope,
    EventType,
    RebalanceTriggeredV1,
    StatusEntity,
    StatusUpdatedV1,
    new_event,
)
from rebalancer.domain.errors import RebalancerError
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.service_layer.handlers.recommending import (
    Optimizer,
    default_policy,
    recommendation_created,
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


@dataclass
class ChunkResult:
    """What :func:`recommend_chunk` did, by rebalance."""

    computed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    already_done: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time by stage: ``lock`` (marks and row locks), ``read`` (set-based loads),
    ``build`` (optimizer requests), ``solve``, ``write`` (inserts, updates, outbox, commit)."""


def _status_event(
    tenant_id: str,
    rid: uuid.UUID,
    account_id: str,
    status: str,
    previous: str | None,
    detail: str | None = None,
) -> Envelope:
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
) -> BatchStarted:
    """Open a rebalance per follower of ``model_id`` and queue them for the workers.

    Does not commit (the caller commits, with its idempotency record if any).

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
    for account_id in followers:
        row = open_rebalances.get(account_id)
        if row is not None and row.status != "requested":
            skipped += (
                1  # a recommendation exists already; approving or cancelling it is a person's call
            )
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
            events.append((_status_event(uow.tenant_id, rid, account_id, "requested", None), None))
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
    uow.audit.record(actor, "batch_rebalance", "model", model_id, {"batch_id": str(batch_id)})
    log.info(
        "batch.started", batch_id=str(batch_id), model_id=model_id, queued=queued, skipped=skipped
    )
    return BatchStarted(batch_id, model_id, model.version, len(followers), queued, skipped)


CLOSES_TTL_S = 60.0
"""How long a worker reuses the closes of an instrument set for the same market date."""
_closes_cache: dict[tuple[date, tuple[str, ...]], tuple[float, dict[str, list[float]]]] = {}


def _cached_closes(uow: UnitOfWork, ids: list[str], as_of: date) -> dict[str, list[float]]:
    """A year of closes of ``ids`` (oldest first), shared by the chunks of a worker process.

    Every chunk of a batch asks for the same instruments on the same market date; reading
    and converting about 13,000 rows per chunk was a tenth of its time. Entries expire after
    :data:`CLOSES_TTL_S` and whenever the market date moves.
    """
    key = (as_of, tuple(ids))
    hit = _closes_cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < CLOSES_TTL_S:
        return hit[1]
    closes = uow.market.closes(ids)
    if len(_closes_cache) > 64:
        _closes_cache.clear()
    _closes_cache[key] = (now, closes)
    return closes


def _solve_all(
    optimizer: Optimizer, requests: Sequence[AnalyzeRequest], *, vmap: bool = False
) -> list[AnalyzeResponse | RebalancerError]:
    """Solve every request with one ``analyze_many`` call (a plain loop over ``analyze`` for an
    engine without it); the error of one account stays in its slot and fails only that account.

    ``vmap`` asks the engine to run the chunk's first fast solves as one vmapped batch (its
    ``batched`` flag). An unexpected exception in a slot (a crash inside the solver) becomes
    :class:`AnalysisCrashedError`: analysis is pure computation, a retry would fail again.
    """
    if not requests:
        return []
    many = getattr(optimizer, "analyze_many", None)
    if callable(many):
        takes_flag = "batched" in inspect.signature(many).parameters
        out = list(many(list(requests), batched=vmap) if takes_flag else many(list(requests)))
        if len(out) != len(requests):
            raise RuntimeError(f"analyze_many answered {len(out)} of {len(requests)} requests")
    else:
        out = []
        for req in requests:
            try:
                out.append(optimizer.analyze(req))
            except Exception as exc:  # isolated per request, like analyze_many
                out.append(exc)
    return [_as_outcome(r) for r in out]


def _as_outcome(value: object) -> AnalyzeResponse | RebalancerError:
    if isinstance(value, AnalyzeResponse | RebalancerError):
        return value
    if isinstance(value, BaseException):
        log.error("batch.analyze_crashed", error=repr(value))
        return AnalysisCrashedError(f"the optimizer failed: {value!r}")
    raise TypeError(f"analyze_many returned {type(value).__name__}, not a response")


class AnalysisCrashedError(RebalancerError):
    """The optimizer raised an unexpected error for one account (its rebalance fails)."""

    code = "analysis_crashed"


def recommend_chunk(
    uow: UnitOfWork,
    optimizer: Optimizer,
    items: Sequence[tuple[uuid.UUID, RebalanceTriggeredV1]],
    *,
    vmap: bool = False,
) -> ChunkResult:
    """Compute and store the recommendations of a chunk of batch items, then commit.

    One transaction: record the event ids, **one read** of the chunk (rebalances and accounts
    locked and loaded by one statement, then the reference data the accounts need), **one
    solve** (``analyze_many``), **one write** (``COPY`` of the recommendations, one status
    ``UPDATE``, the outbox events), commit.

    Parameters
    ----------
    uow
        Unit of work of the items' tenant.
    optimizer
        The worker thread's engine (compiled problems are reused across accounts).
    items
        ``(event_id, payload)`` of ``rebalance_triggered`` events; redelivered ones and
        rebalances already computed are skipped, so the call is idempotent.
    vmap
        Solve the chunk's first fast solves as one vmapped batch. Off by default: on a 2-core
        CPU it is not faster and every new batch size compiles for about 100 s
        (docs/optimizer.md, "Many accounts"); turn it on for wide vector units or an
        accelerator.
    """
    result = ChunkResult()
    clock = _Clock(result.seconds)
    fresh = bulk.first_time_many(uow.conn, BATCH_CONSUMER, [e for e, _ in items])
    todo = [p for e, p in items if e in fresh]
    result.already_done = len(items) - len(todo)
    locked = bulk.lock_chunk_accounts(
        uow.conn, uow.tenant_id, [uuid.UUID(p.rebalance_id) for p in todo]
    )
    requested = [c for c in locked if c.status == "requested"]
    result.already_done += len(todo) - len(requested)
    clock.lap("lock")
    if not requested:
        uow.commit()
        return result
    accounts = [c.account for c in requested]
    model_ids = {s.model_id for a in accounts for s in a.sleeves}
    models = {k: rec.model for k, rec in uow.models.get_many(model_ids).items()}
    ids = sorted({i for a in accounts for i in involved_instruments(a, models)[1]})
    instruments = uow.instruments.get_many(ids)
    quotes = uow.market.latest(ids)
    as_of = uow.market.as_of() or date.today()
    closes = _cached_closes(uow, ids, as_of)
    clock.lap("read")
    policy = default_policy()
    built: list[tuple[bulk.ChunkAccount, AnalyzeRequest]] = []
    outcomes: dict[uuid.UUID, AnalyzeResponse | RebalancerError] = {}
    for c in requested:
        try:
            req = make_request(c.account, models, instruments, quotes, closes, as_of, policy)
            built.append((c, req))
        except RebalancerError as exc:
            outcomes[c.rebalance_id] = exc
    clock.lap("build")
    solved = _solve_all(optimizer, [q for _, q in built], vmap=vmap)
    clock.lap("solve")
    for (c, _), out in zip(built, solved, strict=True):
        outcomes[c.rebalance_id] = out
    _store(uow, requested, {c.rebalance_id: q for c, q in built}, outcomes, result)
    batches = sorted({c.batch_id for c in requested if c.batch_id is not None})
    BatchRepository(uow.conn, uow.tenant_id).finish_if_done(batches)
    uow.commit()
    clock.lap("write")
    return result


class _Clock:
    """Adds the wall time since the previous lap to ``into[stage]`` (seconds)."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.last = now


def _store(
    uow: UnitOfWork,
    rows: Sequence[bulk.ChunkAccount],
    requests: dict[uuid.UUID, AnalyzeRequest],
    outcomes: dict[uuid.UUID, AnalyzeResponse | RebalancerError],
    result: ChunkResult,
) -> None:
    """Write recommendations (``COPY``), statuses (one ``UPDATE``) and events of a chunk."""
    t = uow.tenant_id
    recs: list[tuple[Any, ...]] = []
    statuses: dict[uuid.UUID, str] = {}
    events: list[tuple[Envelope, str | None]] = []
    for c in rows:
        rid, account_id = c.rebalance_id, c.account.id
        out = outcomes[rid]
        if isinstance(out, RebalancerError):
            statuses[rid] = "failed"
            result.failed.append(rid)
            detail = f"{out.code}: {out.detail}"
            events.append((_status_event(t, rid, account_id, "failed", c.status, detail), None))
            continue
        decision = str(out.decision)
        status = "pending_approval" if decision == Decision.REBALANCE else "no_trade"
        rec_id = uuid.uuid4()
        recs.append(
            (
                rec_id,
                rid,
                t,
                account_id,
                decision,
                status,
                Decimal(str(round(out.net_benefit, 6))),
                requests[rid].model_dump_json(),
                out.model_dump_json(),
            )
        )
        statuses[rid] = status
        result.computed.append(rid)
        env = recommendation_created(t, rec_id, account_id, rid, decision, out)
        events.append((env, None))
        events.append((_status_event(t, rid, account_id, status, c.status), None))
    bulk.copy_recommendations(uow.conn, recs)
    bulk.set_rebalance_statuses(uow.conn, statuses)
    bulk.add_outbox_many(uow.conn, events)


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
