"""Apache Pulsar adapter (official ``pulsar-client``): producers, consumer loops, dead letters.

Delivery rules (see docs/events.md):

- Subscriptions are **Shared**: any number of worker processes share the load, and pulsar-lite
  redelivers only on Shared subscriptions. Ordering per account comes from row locks in
  PostgreSQL, never from the broker.
- A message is acknowledged only after its handler committed. A handler error negatively
  acknowledges it (redelivered after a short delay); after ``max_redeliveries`` attempts, or at
  once when the message cannot be decoded or a business rule refuses it, it is published to
  ``<topic>-DLQ`` with the reason in the ``dead_letter_reason`` property and acknowledged, so
  the consumer keeps running.
- A *transient* failure (database or broker unreachable, see ``is_transient``) is not the
  message's fault: the handler is retried in place with exponential backoff (up to
  ``max_backoff_s`` between attempts) for as long as it takes, and never counts toward
  dead-lettering. When the loop is stopped meanwhile, the message is negatively acknowledged
  and so redelivered to another consumer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pulsar
import structlog

# the subscribe side lives in its own module; re-exported here for existing importers
from rebalancer.adapters.pulsar_subscribe import CONSUMER_ID_BLOCK as CONSUMER_ID_BLOCK
from rebalancer.adapters.pulsar_subscribe import ID_BURN_TOPIC as ID_BURN_TOPIC
from rebalancer.adapters.pulsar_subscribe import SharedSubscriber as SharedSubscriber
from rebalancer.adapters.pulsar_subscribe import SubscribeCancelled as SubscribeCancelled
from rebalancer.adapters.pulsar_subscribe import claim_slot as claim_slot
from rebalancer.adapters.pulsar_subscribe import retry_broker_call as retry_broker_call
from rebalancer.adapters.pulsar_subscribe import subscribe_error_kind as subscribe_error_kind
from rebalancer.contracts import (
    DEAD_LETTER_REASON_PROPERTY,
    Envelope,
    MalformedEvent,
    dead_letter_topic,
    decode,
)
from rebalancer.domain.errors import RebalancerError

log = structlog.get_logger(__name__)


def make_client(url: str, operation_timeout_s: int = 15) -> pulsar.Client:
    """A Pulsar client whose C++ library logs warnings and errors natively.

    Not through a Python ``logging.Logger``: the client's C++ timer threads then need the GIL
    for every log line, and one blocked there while the interpreter waited on it deadlocked a
    test run (seen with the unacked-message tracker). The native logger needs no GIL.
    """
    return pulsar.Client(
        url,
        logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
        operation_timeout_seconds=operation_timeout_s,
        connection_timeout_ms=5000,
    )


class Publisher:
    """Caches one producer per topic; thread-safe.

    Parameters
    ----------
    client
        Pulsar client.
    batching
        Pack several messages into one broker entry. Off by default: pulsar-lite 0.2 charges a
        batch entry of N messages against a Shared subscription's *aggregate* permit count in
        one go, which drives it below zero, and does not give back the balance of a consumer
        that disconnects. Once a consumer holding such a negative balance dies (a SIGKILLed
        worker), the aggregate stays <= 0 and the dispatcher skips every later round, so the
        surviving and replacement consumers, each with permits of its own, receive nothing
        (measured: aggregate -17 at the kill, -11 and -5 after two fresh consumers flowed 6
        each; the batch stalled). One message per entry keeps the aggregate >= 0. On Apache
        Pulsar batching only raises throughput, and the outbox relay is bound by PostgreSQL.
    """

    def __init__(self, client: pulsar.Client, *, batching: bool = False) -> None:
        self._client = client
        self._batching = batching
        self._producers: dict[str, pulsar.Producer] = {}
        self._lock = threading.Lock()

    def producer(self, topic: str) -> pulsar.Producer:
        """The cached producer of ``topic`` (created on first use)."""
        with self._lock:
            prod = self._producers.get(topic)
            if prod is None:
                prod = self._client.create_producer(
                    topic,
                    block_if_queue_full=True,
                    batching_enabled=self._batching,
                    batching_max_publish_delay_ms=2,
                    send_timeout_millis=15000,
                )
                self._producers[topic] = prod
            return prod

    def publish(
        self, topic: str, key: str, body: bytes, properties: dict[str, str] | None = None
    ) -> None:
        """Send one message and wait for the broker's receipt."""
        self.producer(topic).send(body, partition_key=key, properties=properties or {})

    def publish_many(self, messages: Iterable[tuple[str, str, bytes]]) -> int:
        """Send ``(topic, key, body)`` messages asynchronously, then wait for every receipt.

        Raises
        ------
        RuntimeError
            If any send failed (the caller must not mark the batch as published).
        """
        failures: list[str] = []
        count = 0
        done = threading.Semaphore(0)

        def callback(res: pulsar.Result, _msg_id: object) -> None:
            if res != pulsar.Result.Ok:
                failures.append(str(res))
            done.release()

        used: set[str] = set()
        for topic, key, body in messages:
            self.producer(topic).send_async(body, callback, partition_key=key)
            used.add(topic)
            count += 1
        for topic in used:
            self.producer(topic).flush()
        for _ in range(count):
            if not done.acquire(timeout=30):
                raise RuntimeError("timed out waiting for the broker to confirm publishes")
        if failures:
            raise RuntimeError(f"{len(failures)} publishes failed: {failures[0]}")
        return count

    def close(self) -> None:
        with self._lock:
            for prod in self._producers.values():
                with contextlib.suppress(Exception):
                    prod.close()
            self._producers.clear()


Handler = Callable[[Envelope], None]

BROKER_ERRORS: tuple[type[BaseException], ...] = (pulsar.PulsarException, ConnectionError)
"""Errors meaning the broker (not the message) is the problem."""


def broker_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a broker or network error worth retrying."""
    return isinstance(exc, BROKER_ERRORS)


def retry_transient(
    fn: Callable[[], object],
    transient: Callable[[BaseException], bool],
    stop: threading.Event,
    *,
    max_backoff_s: float = 5.0,
    first_backoff_s: float = 0.1,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> bool:
    """Call ``fn`` until it succeeds, retrying the errors ``transient`` accepts with backoff.

    The pause doubles from ``first_backoff_s`` up to ``max_backoff_s`` seconds and lasts for as
    long as the outage does: a database restart or a broker failover is not the message's
    fault, so it must neither fail nor dead-letter it. Other errors propagate at once.

    Returns
    -------
    bool
        True when ``fn`` succeeded; False when ``stop`` was set while waiting (the caller then
        negatively acknowledges, so that another consumer takes the message).
    """
    backoff = first_backoff_s
    while True:
        try:
            fn()
            return True
        except Exception as exc:
            if not transient(exc):
                raise
            if on_retry is not None:
                on_retry(exc, backoff)
            if stop.wait(backoff):
                return False
            backoff = min(backoff * 2, max_backoff_s)


@dataclass
class ConsumerStats:
    """Counters of one consumer loop (for metrics and tests)."""

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    transient_retries: int = 0


class ConsumerLoop:
    """Receive, decode, handle, acknowledge; dead-letter poison messages.

    Parameters
    ----------
    client
        A :class:`SharedSubscriber` (consumer ids unique on the host: any number of processes
        may run the same loops) or a plain Pulsar client (only one process per subscription on
        pulsar-lite).
    publisher
        Used to publish dead letters.
    topics
        Topics to subscribe to (one consumer over all of them).
    subscription
        Shared subscription name; every worker process uses the same one.
    handler
        Called with each decoded envelope inside the caller's transaction logic; it must be
        idempotent by ``event_id``.
    max_redeliveries
        Attempts before a failing message is dead-lettered.
    is_transient
        Classifies handler errors that are the infrastructure's fault (retried in place with
        backoff, never dead-lettered); broker and network errors always are.
    max_backoff_s
        Longest pause between two retries of a transient failure.
    """

    def __init__(
        self,
        client: pulsar.Client | SharedSubscriber,
        publisher: Publisher,
        topics: list[str],
        subscription: str,
        handler: Handler,
        *,
        max_redeliveries: int = 3,
        name: str = "consumer",
        is_transient: Callable[[BaseException], bool] | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.publisher = publisher
        self.handler = handler
        self.max_redeliveries = max_redeliveries
        self.name = name
        self.stats = ConsumerStats()
        self._is_transient = is_transient
        self.max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self.consumer = client.subscribe(  # type: ignore[call-arg]
            topics,
            subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            negative_ack_redelivery_delay_ms=200,
            unacked_messages_timeout_ms=60_000,
            receiver_queue_size=100,
        )

    def _dead_letter(self, msg: pulsar.Message, reason: str) -> None:
        topic = dead_letter_topic(_base_topic(msg.topic_name()))
        props = dict(msg.properties())
        props.update(
            {DEAD_LETTER_REASON_PROPERTY: reason[:1000], "original_topic": msg.topic_name()}
        )
        self.publisher.publish(topic, msg.partition_key() or "", msg.data(), props)
        self.consumer.acknowledge(msg)
        self.stats.dead_lettered += 1
        log.warning("event.dead_lettered", consumer=self.name, topic=topic, reason=reason)

    def process_one(self, timeout_ms: int = 200) -> bool:
        """Receive and process at most one message; returns whether one was received."""
        try:
            msg = self.consumer.receive(timeout_millis=timeout_ms)
        except pulsar.Timeout:
            return False
        try:
            envelope = decode(msg.data())
        except MalformedEvent as exc:
            self._dead_letter(msg, f"malformed: {exc.reason}")
            return True
        try:
            if not self._handle_retrying_transient(envelope):
                self.consumer.negative_acknowledge(msg)  # stopping: another consumer takes it
                return True
        except MalformedEvent as exc:  # payload-level validation inside the handler
            self._dead_letter(msg, f"malformed: {exc.reason}")
            return True
        except RebalancerError as exc:  # a business rule refuses it: retrying cannot help
            self._dead_letter(msg, f"unprocessable: {exc.code}: {exc.detail}")
            return True
        except Exception as exc:
            self.stats.failed += 1
            attempts = msg.redelivery_count() + 1
            log.warning(
                "event.handler_failed",
                consumer=self.name,
                event_id=str(envelope.event_id),
                type=envelope.type,
                attempt=attempts,
                error=repr(exc),
            )
            if attempts >= self.max_redeliveries:
                self._dead_letter(msg, f"unprocessable after {attempts} attempts: {exc!r}")
            else:
                self.consumer.negative_acknowledge(msg)
            return True
        self.consumer.acknowledge(msg)
        self.stats.handled += 1
        return True

    def transient(self, exc: BaseException) -> bool:
        """Whether a handler error is the infrastructure's fault (retry, never dead-letter)."""
        if broker_unavailable(exc):
            return True
        return self._is_transient is not None and self._is_transient(exc)

    def _handle_retrying_transient(self, envelope: Envelope) -> bool:
        """Run the handler, retrying transient failures with backoff; False if stopped first."""

        def on_retry(exc: BaseException, retry_in_s: float) -> None:
            self.stats.transient_retries += 1
            log.warning(
                "event.transient_failure",
                consumer=self.name,
                event_id=str(envelope.event_id),
                type=envelope.type,
                error=repr(exc)[:300],
                retry_in_s=retry_in_s,
            )

        return retry_transient(
            lambda: self.handler(envelope),
            self.transient,
            self._stop,
            max_backoff_s=self.max_backoff_s,
            on_retry=on_retry,
        )

    def run(self, stop: threading.Event) -> None:
        """Process messages until ``stop`` is set (finishing the message in hand).

        Errors of the loop itself (the broker went away while receiving or acknowledging) are
        logged and retried with backoff; the client reconnects by itself, and a message whose
        acknowledgement was lost is redelivered and absorbed by the idempotent handler.
        """
        self._stop = stop
        backoff = 0.1
        while not stop.is_set():
            try:
                self.process_one()
                backoff = 0.1
            except Exception as exc:
                log.warning("consumer.error", consumer=self.name, error=repr(exc)[:300])
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


def _base_topic(topic_name: str) -> str:
    """Strip a ``-partition-N`` suffix so dead letters go to one DLQ per logical topic."""
    head, sep, tail = topic_name.rpartition("-partition-")
    return head if sep and tail.isdigit() else topic_name
