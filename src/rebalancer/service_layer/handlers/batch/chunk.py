"""The work of a batch: compute and store a chunk of batch items in one transaction."""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import structlog

from rebalancer.adapters.repositories import bulk
from rebalancer.adapters.repositories.batches import BatchRepository
from rebalancer.analytics.requests import LossSale, involved_instruments, make_request
from rebalancer.contracts import RebalanceTriggeredV1
from rebalancer.domain.errors import RebalancerError
from rebalancer.optimizer.gc_pause import gc_pause
from rebalancer.optimizer.response_schemas import AnalyzeResponse
from rebalancer.optimizer.schemas import AnalyzeRequest
from rebalancer.service_layer.handlers.batch.fanout import BATCH_CONSUMER
from rebalancer.service_layer.handlers.batch.inputs import (
    ChunkInputs,
    SharedRiskModel,
    cached_closes,
)
from rebalancer.service_layer.handlers.batch.store import store_chunk
from rebalancer.service_layer.handlers.recommending import Optimizer, default_policy
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


@dataclass
class ChunkResult:
    """What :func:`recommend_chunk` did, by rebalance."""

    computed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    already_done: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time by stage: ``lock`` (marks and row locks), ``read`` (set-based loads),
    ``build`` (optimizer requests), ``solve``, ``write`` (inserts, updates, outbox, commit)."""
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time of the calling thread by stage (same keys as :attr:`seconds`; the database's
    work is not in it)."""


class AnalysisCrashedError(RebalancerError):
    """The optimizer raised an unexpected error for one account (its rebalance fails)."""

    code = "analysis_crashed"


def solve_all(
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


class _Clock:
    """Adds the wall time since the previous lap to ``into[stage]`` and the calling thread's
    CPU time to ``cpu[stage]`` (seconds)."""

    def __init__(self, into: dict[str, float], cpu: dict[str, float]) -> None:
        self.into, self.cpu = into, cpu
        self.last, self.last_cpu = time.perf_counter(), time.thread_time()

    def lap(self, stage: str) -> None:
        now, now_cpu = time.perf_counter(), time.thread_time()
        self.into[stage] = self.into.get(stage, 0.0) + now - self.last
        self.cpu[stage] = self.cpu.get(stage, 0.0) + now_cpu - self.last_cpu
        self.last, self.last_cpu = now, now_cpu


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
    build** (the instrument entries and covariance once per instrument set, reused across
    chunks), **one solve** (``analyze_many``), **one write** (the chunk's new shared risk
    models, ``COPY`` of the recommendations referencing them, one status ``UPDATE``, the outbox
    events), commit.

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
    # Paused for the whole chunk, not only inside each analysis: the reads, requests and writes
    # around the solves allocate as much, and their young collections walked the chunk's
    # requests and answers again and again (0.2-0.4 ms of CPU per account; see
    # docs/deployment.md). Nearly everything is freed by reference counting when the chunk ends.
    with gc_pause:
        return _recommend_chunk(uow, optimizer, items, vmap)


def _recommend_chunk(
    uow: UnitOfWork,
    optimizer: Optimizer,
    items: Sequence[tuple[uuid.UUID, RebalanceTriggeredV1]],
    vmap: bool,
) -> ChunkResult:
    result = ChunkResult()
    clock = _Clock(result.seconds, result.cpu_seconds)
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
    ids_of = {c.rebalance_id: involved_instruments(c.account, models)[1] for c in requested}
    ids = sorted({i for v in ids_of.values() for i in v})
    instruments = uow.instruments.get_many(ids)
    quotes = uow.market.latest(ids)
    as_of = uow.market.as_of() or date.today()
    database = uow.conn.engine.url.render_as_string(hide_password=True)
    inputs = ChunkInputs(
        uow.tenant_id, database, as_of, instruments, quotes, cached_closes(uow, ids, as_of)
    )
    clock.lap("read")
    policy = default_policy()
    # a loss sold in the window must not be washed by buying its group back (as build_request)
    losses = uow.tax.recent_loss_sales_many([a.id for a in accounts], as_of, policy.wash_sale_days)
    built: list[tuple[bulk.ChunkAccount, AnalyzeRequest, SharedRiskModel | None]] = []
    outcomes: dict[uuid.UUID, AnalyzeResponse | RebalancerError] = {}
    for c in requested:
        shared = inputs.get(ids_of[c.rebalance_id])
        try:
            req = make_request(
                c.account,
                models,
                instruments,
                quotes,
                inputs.closes,
                as_of,
                policy,
                recent_loss_sales=[
                    LossSale(instrument=i, date=d) for i, d in losses.get(c.account.id, [])
                ],
                market=None if shared is None else shared[0],
            )
            built.append((c, req, None if shared is None else shared[1]))
        except RebalancerError as exc:
            outcomes[c.rebalance_id] = exc
    clock.lap("build")
    solved = solve_all(optimizer, [q for _, q, _ in built], vmap=vmap)
    clock.lap("solve")
    for (c, _, _), out in zip(built, solved, strict=True):
        outcomes[c.rebalance_id] = out
    used = [s for _, _, s in built if s is not None]
    new_risk_models = inputs.unstored(used)
    computed, failed = store_chunk(
        uow,
        requested,
        {c.rebalance_id: (q, s) for c, q, s in built},
        outcomes,
        new_risk_models,
    )
    result.computed.extend(computed)
    result.failed.extend(failed)
    batches = sorted({c.batch_id for c in requested if c.batch_id is not None})
    BatchRepository(uow.conn, uow.tenant_id).finish_if_done(batches)
    uow.commit()
    inputs.committed(new_risk_models)
    clock.lap("write")
    return result
