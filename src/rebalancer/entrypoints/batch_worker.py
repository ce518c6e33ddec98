"""The consumer of batch items: takes ``rebalance_triggered`` events of batch rebalances from
:data:`~rebalancer.service_layer.handlers.batch.BATCH_TOPIC` in chunks and computes them.

Delivery rules (as for every consumer, see :mod:`rebalancer.adapters.pulsar_bus`): a Shared
subscription, so any number of worker processes share the items; messages are acknowledged only
after their chunk committed; a failing chunk is negatively acknowledged (redelivered) and, after
``max_redeliveries`` attempts, dead-lettered to ``<topic>-DLQ`` with the reason. When a worker
process dies, the broker redelivers its unacknowledged messages to the remaining consumers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import pulsar
import structlog
from prometheus_client import Counter

from rebalancer.adapters.pulsar_bus import make_client
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
from rebalancer.service_layer.handlers.batch import BATCH_TOPIC, recommend_chunk
from rebalancer.service_layer.unit_of_work import UnitOfWork, with_retries

log = structlog.get_logger(__name__)

ITEMS = Counter("rebalancer_batch_items_total", "Batch items handled", ["result"])

DEFAULT_CHUNK = int(os.environ.get("REBALANCER_BATCH_CHUNK_SIZE", "16"))
"""Items per chunk (env ``REBALANCER_BATCH_CHUNK_SIZE``): large enough to amortize the
set-based reads, small enough that the Shared subscription spreads a batch evenly and a crash
redoes little."""


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


ID_BURN_TOPIC = "persistent://public/default/rebalancer.consumer-id-burn"


def claim_slot(data_dir: Path, limit: int = 1024) -> tuple[int, IO[str]]:
    """The lowest consumer slot free on this host, held (``flock``) until the file is closed.

    The lock dies with the process, also on SIGKILL, so a restarted worker reuses the slot.
    """
    folder = data_dir / "consumer-slots"
    for i in range(limit):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            f = open(folder / f"{i}.lock", "w")  # noqa: SIM115 - held for the consumer's lifetime
        except OSError as exc:  # read-only data dir: fine on Apache Pulsar, risky on pulsar-lite
            log.warning("batch.no_consumer_slot", folder=str(folder), error=repr(exc))
            return 0, open(os.devnull, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return i, f
    raise RuntimeError(f"all {limit} consumer slots in {folder} are taken")


def subscribe_with_unique_id(
    client: pulsar.Client, slot: int, topic: str, subscription: str, **conf: object
) -> pulsar.Consumer:
    """Subscribe so that the consumer's protocol id equals ``slot``.

    pulsar-lite 0.2 identifies the consumers of a subscription by their protocol consumer id
    alone, which each client numbers from 0: a second process subscribing to the same Shared
    subscription times out. Burning ``slot`` ids with short-lived readers on a fresh client
    gives every process on the host a distinct id. Apache Pulsar keys consumers per connection,
    where this is harmless (the readers use non-durable subscriptions).
    """
    for _ in range(slot):
        client.create_reader(ID_BURN_TOPIC, pulsar.MessageId.latest).close()
    return client.subscribe(topic, subscription, **conf)  # type: ignore[arg-type]


class BatchConsumerLoop:
    """Receive batch items in chunks, compute them, acknowledge after commit.

    Parameters
    ----------
    rt
        The process runtime (its thread-local ``optimizer`` reuses compiled problems).
    chunk_size
        Most items handled in one transaction.
    max_redeliveries
        Attempts before a failing item is dead-lettered.
    name
        Thread and log name.
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        max_redeliveries: int = 3,
        name: str = "batch",
    ) -> None:
        self.rt = rt
        self.name = name
        self.max_redeliveries = max_redeliveries
        self.handled = 0
        self._optimizer: Any = None
        single_threaded_blas()
        self.slot, self._slot_file = claim_slot(rt.settings.data_dir)
        self.client = make_client(rt.infra.pulsar_url)
        self.consumer = subscribe_with_unique_id(
            self.client,
            self.slot,
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
        """The engine of this loop's thread: ``rt.optimizer`` (compiled problems reused across
        accounts), or with ``REBALANCER_BATCH_ENGINE=fast`` one whose chain starts with the JAX
        fast path (``FAST_CHAIN``) when the optimizer offers it."""
        if self._optimizer is None:
            self._optimizer = self.rt.optimizer
            if os.environ.get("REBALANCER_BATCH_ENGINE", "").lower() == "fast":
                from rebalancer.optimizer import engine

                chain = getattr(engine, "FAST_CHAIN", None)
                if chain is not None:
                    self._optimizer = engine.Recommender(solvers=chain)
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
                res = recommend_chunk(uow, self.optimizer, items)
            ITEMS.labels("computed").inc(len(res.computed))
            ITEMS.labels("failed").inc(len(res.failed))
            ITEMS.labels("duplicate").inc(res.already_done)

        try:
            with_retries(attempt)
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
        for msg, _, _ in group:
            self.consumer.acknowledge(msg)
        self.handled += len(group)

    def run(self, stop: threading.Event) -> None:
        """Process chunks until ``stop`` is set (finishing the chunk in hand)."""
        while not stop.is_set():
            try:
                self.process_once()
            except Exception as exc:
                log.warning("batch.consumer_error", consumer=self.name, error=repr(exc))
                time.sleep(0.5)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()
        with contextlib.suppress(Exception):
            self.client.close()
        self._slot_file.close()
