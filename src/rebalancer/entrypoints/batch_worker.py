"""The consumer of batch items: takes ``rebalance_triggered`` events of batch rebalances from
:data:`~rebalancer.service_layer.handlers.batch.BATCH_TOPIC` in chunks and computes them.

Delivery rules (as for every consumer, see :mod:`rebalancer.adapters.pulsar_bus`): a Shared
subscription, so any number of worker processes share the items; messages are acknowledged only
after their chunk committed. A database outage (lost connections, a restart, crash recovery) is
transient: the chunk is retried in place with backoff for as long as it lasts and never counts
toward dead-lettering. Any other failure of a chunk negatively acknowledges it (redelivered)
and, after ``max_redeliveries`` attempts, dead-letters it to ``<topic>-DLQ`` with the reason.
When a worker process dies, the broker redelivers its unacknowledged messages to the remaining
consumers.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import os
import threading
import uuid
from collections import defaultdict
from typing import Any

import pulsar
import structlog
from prometheus_client import Counter

from rebalancer.adapters.pulsar_bus import SharedSubscriber, retry_transient
from rebalancer.bootstrap import Runtime
from rebalancer.contracts import (
    DEAD_LETTER_REASON_PROPERTY,
    MalformedEvent,
    RebalanceTriggeredV1,
    dead_letter_topic,
    decode,
    parse_payload_as,
)
from rebalancer.domain.errors import RebalancerError
from rebalancer.entrypoints.consumers import infrastructure_error
from rebalancer.service_layer.handlers.batch import BATCH_TOPIC, recommend_chunk
from rebalancer.service_layer.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

ITEMS = Counter("rebalancer_batch_items_total", "Batch items handled", ["result"])

VMAP = os.environ.get("REBALANCER_BATCH_VMAP", "").lower() in {"1", "true", "yes"}
"""Solve a chunk's first fast solves as one vmapped batch (env ``REBALANCER_BATCH_VMAP=1``).
Off by default: not faster on a 2-core CPU, and each batch size compiles once (see
docs/optimizer.md, "Many accounts")."""

DEFAULT_CHUNK = int(os.environ.get("REBALANCER_BATCH_CHUNK_SIZE", "64"))
"""Items per chunk (env ``REBALANCER_BATCH_CHUNK_SIZE``): large enough to amortize the
set-based reads and the commit (a chunk costs about 13 round trips whatever its size), small
enough that the Shared subscription spreads a batch evenly and a crash redoes little (64
accounts are about 1.5 s of CPU; 10,000 accounts are about 160 chunks). 64 instead of 32 saved
1.0-1.3 ms of CPU per account (workers and PostgreSQL; three back-to-back pairs of 2,000
accounts with 2 workers, docs/deployment.md)."""


def single_threaded_blas() -> None:
    """Limit BLAS/OpenMP pools of this process to one thread.

    A worker process is the unit of parallelism: on a busy 2-core host a multi-threaded BLAS
    spin-waits for cores held by other workers, which made the covariance eigendecomposition
    8x and each Clarabel solve about 2x slower in our measurement (docs/benchmarks.md).
    """
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # for BLAS libraries loaded later (at the first solve)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - set OMP_NUM_THREADS=1 in the environment instead
        return
    threadpool_limits(limits=1)


class BatchSolver(enum.StrEnum):
    """Solver chain of a batch worker (``rebalancer worker --solver``, env
    ``REBALANCER_BATCH_SOLVER``)."""

    FAST = "fast"
    """The JAX fast path first, the conic chain as fallback (``FAST_CHAIN``); a chunk is solved
    with one ``analyze_many`` call (vmapped first solve)."""
    CLARABEL = "clarabel"
    """CVXPY + Clarabel first (``DEFAULT_CHAIN``), the reference."""


def parse_solver(raw: str, source: str = "--solver") -> BatchSolver:
    """The :class:`BatchSolver` named by ``raw`` (case-insensitive).

    Raises
    ------
    ValueError
        When ``raw`` names none; the message names ``source`` and lists the choices.
    """
    try:
        return BatchSolver(raw.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in BatchSolver)
        raise ValueError(f"{source}={raw!r}: choose one of {choices}") from None


def default_solver() -> BatchSolver:
    """``REBALANCER_BATCH_SOLVER`` (or the older ``REBALANCER_BATCH_ENGINE``), else
    :data:`DEFAULT_SOLVER`."""
    raw = os.environ.get("REBALANCER_BATCH_SOLVER") or os.environ.get("REBALANCER_BATCH_ENGINE")
    if not raw or raw.lower() == "default":
        return DEFAULT_SOLVER
    return parse_solver(raw, "REBALANCER_BATCH_SOLVER")


DEFAULT_SOLVER = BatchSolver.FAST
"""The chain a batch worker uses unless told otherwise (see docs/deployment.md, "Solver")."""


def make_engine(solver: BatchSolver) -> Any:
    """A :class:`~rebalancer.optimizer.Recommender` with the chain of ``solver``."""
    from rebalancer.optimizer.engine import DEFAULT_CHAIN, FAST_CHAIN, Recommender

    if solver is BatchSolver.FAST:  # the process's fast solver: shares the warmed-up buckets
        from rebalancer.optimizer.fast.solver import shared_fast_solver

        return Recommender(solvers=FAST_CHAIN, fast=shared_fast_solver())
    return Recommender(solvers=DEFAULT_CHAIN)


class BatchConsumerLoop:
    """Receive batch items in chunks, compute them, acknowledge after commit.

    Parameters
    ----------
    rt
        The process runtime.
    chunk_size
        Most items handled in one transaction.
    max_redeliveries
        Attempts before a failing item is dead-lettered (database outages do not count).
    name
        Thread and log name.
    solver
        The solver chain (:func:`default_solver` when omitted).
    subscriber
        Creates the consumer with a host-unique consumer id; shared with the process's service
        consumers (:class:`~rebalancer.entrypoints.consumers.Worker`). One of its own is
        created (and closed with the loop) when omitted.
    max_backoff_s
        Longest pause between two attempts of a chunk while the database is unreachable.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        max_redeliveries: int = 3,
        name: str = "batch",
        solver: BatchSolver | None = None,
        subscriber: SharedSubscriber | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.rt = rt
        self.name = name
        self.max_redeliveries = max_redeliveries
        self.solver = solver or default_solver()
        self.max_backoff_s = max_backoff_s
        self.handled = 0
        self.transient_retries = 0
        self._optimizer: Any = None
        self._stop = threading.Event()
        single_threaded_blas()
        # no start-up warm-up here: the service's warm buckets (500 instruments among them)
        # cost a batch worker 8-16 s of CPU and ~400 MiB it may never use; the bucket of the
        # first chunk compiles (or loads from the persistent cache) when that chunk needs it
        self._own_subscriber = subscriber is None
        self.subscriber = subscriber or SharedSubscriber(
            rt.infra.pulsar_url, rt.settings.data_dir, stop=rt.stop_event
        )
        self.consumer = self.subscriber.subscribe(
            BATCH_TOPIC,
            rt.settings.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=2 * chunk_size,
            negative_ack_redelivery_delay_ms=500,
            unacked_messages_timeout_ms=300_000,
            batch_receive_policy=pulsar.ConsumerBatchReceivePolicy(chunk_size, -1, 50),
        )

    @property
    def optimizer(self) -> Any:
        """This loop's engine (created on first use in the loop's thread; compiled problems
        and JAX functions are reused across chunks)."""
        if self._optimizer is None:
            self._optimizer = make_engine(self.solver)
        return self._optimizer

    def _dead_letter(self, msg: pulsar.Message, reason: str) -> None:
        props = dict(msg.properties())
        props.update({DEAD_LETTER_REASON_PROPERTY: reason[:1000], "original_topic": BATCH_TOPIC})
        self.rt.publisher.publish(
            dead_letter_topic(BATCH_TOPIC), msg.partition_key() or "", msg.data(), props
        )
        self.consumer.acknowledge(msg)
        ITEMS.labels("dead_lettered").inc()
        log.warning("batch.dead_lettered", consumer=self.name, reason=reason)

    def process_once(self) -> int:
        """Receive and handle at most one chunk; returns how many messages it held."""
        msgs = self.consumer.batch_receive()
        if not msgs:
            return 0
        groups: dict[str, list[tuple[pulsar.Message, uuid.UUID, RebalanceTriggeredV1]]]
        groups = defaultdict(list)
        for msg in msgs:
            try:
                env = decode(msg.data())
                payload = parse_payload_as(env, RebalanceTriggeredV1)
            except MalformedEvent as exc:
                self._dead_letter(msg, f"malformed: {exc.reason}")
                continue
            groups[env.tenant_id].append((msg, env.event_id, payload))
        for tenant_id, group in groups.items():
            self._handle(tenant_id, group)
        return len(msgs)

    def _handle(
        self, tenant_id: str, group: list[tuple[pulsar.Message, uuid.UUID, RebalanceTriggeredV1]]
    ) -> None:
        items = [(e, p) for _, e, p in group]

        def attempt() -> None:
            with UnitOfWork(self.rt.engine, tenant_id) as uow:
                res = recommend_chunk(uow, self.optimizer, items, vmap=VMAP)
            ITEMS.labels("computed").inc(len(res.computed))
            ITEMS.labels("failed").inc(len(res.failed))
            ITEMS.labels("duplicate").inc(res.already_done)

        def on_retry(exc: BaseException, retry_in_s: float) -> None:
            self.transient_retries += 1
            ITEMS.labels("retried").inc(len(group))
            log.warning(
                "batch.database_unavailable",
                consumer=self.name,
                size=len(group),
                error=repr(exc)[:300],
                retry_in_s=retry_in_s,
            )

        try:
            done = retry_transient(
                attempt,
                infrastructure_error,
                self._stop,
                max_backoff_s=self.max_backoff_s,
                on_retry=on_retry,
            )
        except RebalancerError as exc:  # a business rule refuses the whole chunk
            for msg, _, _ in group:
                self._dead_letter(msg, f"unprocessable: {exc.code}: {exc.detail}")
            return
        except Exception as exc:
            log.warning("batch.chunk_failed", consumer=self.name, size=len(group), error=repr(exc))
            for msg, _, _ in group:
                attempts = msg.redelivery_count() + 1
                if attempts >= self.max_redeliveries:
                    self._dead_letter(msg, f"unprocessable after {attempts} attempts: {exc!r}")
                else:
                    self.consumer.negative_acknowledge(msg)
            return
        if not done:  # stopping during an outage: another worker takes the chunk
            for msg, _, _ in group:
                self.consumer.negative_acknowledge(msg)
            return
        for msg, _, _ in group:
            self.consumer.acknowledge(msg)
        if self.handled == 0:
            # warmed up (compiled problems, JAX functions): keep the cyclic GC from walking
            # these long-lived objects on every full collection (docs/optimizer.md)
            gc.freeze()
        self.handled += len(group)

    def run(self, stop: threading.Event) -> None:
        """Process chunks until ``stop`` is set (finishing the chunk in hand)."""
        self._stop = stop
        while not stop.is_set():
            try:
                self.process_once()
            except Exception as exc:
                log.warning("batch.consumer_error", consumer=self.name, error=repr(exc))
                stop.wait(0.5)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()
        if self._own_subscriber:
            self.subscriber.close()
