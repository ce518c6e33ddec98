"""Dead letters: list them, and replay them to the topic they came from.

A consumer dead-letters a message it cannot process (malformed, refused by a business rule, or
still failing after ``consumer_max_redeliveries`` attempts) to ``<topic>-DLQ`` with the reason in
the ``dead_letter_reason`` property (see :mod:`rebalancer.adapters.pulsar_bus`). This module
reads those topics through one durable Shared subscription, ``rebalancer-dlq``:

- :func:`list_dead_letters` receives every pending dead letter and acknowledges none, so
  listing changes nothing;
- :func:`replay` republishes the selected ones (same bytes, key and properties, plus
  ``replayed_from``) to their original topic and only then acknowledges them, so a dead letter
  is replayed at most once per acknowledgement and never lost (a crash in between replays it
  again, which the idempotent consumers absorb).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pulsar

from rebalancer.adapters.pulsar_bus import Publisher
from rebalancer.contracts import (
    DEAD_LETTER_REASON_PROPERTY,
    TOPICS,
    MalformedEvent,
    dead_letter_topic,
    decode,
)

DLQ_SUBSCRIPTION = "rebalancer-dlq"
"""Durable subscription of the dead-letter tools (separate from every consumer's)."""

DLQ_SUFFIX = dead_letter_topic("")


@dataclass(frozen=True)
class DeadLetter:
    """One pending dead letter, as shown by ``rebalancer dlq list``."""

    dlq_topic: str
    original_topic: str
    message_id: str
    event_id: str | None
    type: str | None
    tenant_id: str | None
    reason: str
    key: str
    published_at: datetime


def dead_letter_topics(topics: Iterable[str] | None = None) -> list[str]:
    """The ``-DLQ`` topics of ``topics`` (default: every topic of the event contract)."""
    base = sorted(set(topics if topics is not None else TOPICS.values()))
    return [t if t.endswith(DLQ_SUFFIX) else dead_letter_topic(t) for t in base]


def _original_topic(msg: pulsar.Message) -> str:
    props = msg.properties()
    topic = str(props.get("original_topic") or msg.topic_name().removesuffix(DLQ_SUFFIX))
    head, sep, tail = topic.rpartition("-partition-")
    return head if sep and tail.isdigit() else topic


def _describe(msg: pulsar.Message) -> DeadLetter:
    event_id = type_ = tenant = None
    with contextlib.suppress(MalformedEvent):
        env = decode(msg.data())
        event_id, type_, tenant = str(env.event_id), str(env.type), env.tenant_id
    return DeadLetter(
        dlq_topic=msg.topic_name(),
        original_topic=_original_topic(msg),
        message_id=str(msg.message_id()),
        event_id=event_id,
        type=type_,
        tenant_id=tenant,
        reason=msg.properties().get(DEAD_LETTER_REASON_PROPERTY, ""),
        key=msg.partition_key() or "",
        published_at=datetime.fromtimestamp(msg.publish_timestamp() / 1000, UTC),
    )


def _visit(
    client: pulsar.Client,
    topics: list[str],
    visit: Callable[[pulsar.Consumer, pulsar.Message], None],
    timeout_ms: int,
) -> None:
    consumer = client.subscribe(
        topics,
        DLQ_SUBSCRIPTION,
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    try:
        while True:
            try:
                msg = consumer.receive(timeout_millis=timeout_ms)
            except pulsar.Timeout:
                return
            visit(consumer, msg)
    finally:
        consumer.close()  # what was not acknowledged stays pending


def list_dead_letters(
    client: pulsar.Client, topics: Iterable[str] | None = None, *, timeout_ms: int = 1000
) -> list[DeadLetter]:
    """Every pending dead letter of ``topics`` (default: all), oldest first per topic."""
    out: list[DeadLetter] = []
    _visit(client, dead_letter_topics(topics), lambda _c, m: out.append(_describe(m)), timeout_ms)
    return out


def replay(
    client: pulsar.Client,
    publisher: Publisher,
    topics: Iterable[str] | None = None,
    *,
    event_ids: Iterable[str] | None = None,
    timeout_ms: int = 1000,
) -> list[DeadLetter]:
    """Republish pending dead letters to their original topics; returns the replayed ones.

    Parameters
    ----------
    event_ids
        Only these events (default: every pending dead letter). A malformed message has no
        event id and is replayed only when no ids are given.
    """
    wanted = None if event_ids is None else {str(e) for e in event_ids}
    done: list[DeadLetter] = []

    def visit(consumer: pulsar.Consumer, msg: pulsar.Message) -> None:
        letter = _describe(msg)
        if wanted is not None and letter.event_id not in wanted:
            return
        props = {k: v for k, v in msg.properties().items() if k != DEAD_LETTER_REASON_PROPERTY}
        props.pop("original_topic", None)
        props["replayed_from"] = letter.dlq_topic
        publisher.publish(letter.original_topic, letter.key, msg.data(), props)
        consumer.acknowledge(msg)
        done.append(letter)

    _visit(client, dead_letter_topics(topics), visit, timeout_ms)
    return done
