"""The event envelope, the payload registry, the JSON codec and the topic names.

Every message on Pulsar is one :class:`Envelope` encoded as UTF-8 JSON. The envelope's
``(type, version)`` selects the payload model (see :data:`PAYLOAD_MODELS`); consumers decode
the bytes with :func:`decode` and the payload with :func:`parse_payload`, both raising
:class:`MalformedEvent` with a reason naming the offending field. See ``docs/events.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rebalancer.contracts.inbound import (
    ExecutionReportV1,
    MarketDataV1,
    ModelChangedV1,
    PortfolioStateUpdatedV1,
    SettlementConfirmedV1,
)
from rebalancer.contracts.outbound import (
    DriftAlertV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    RebalanceTriggeredV1,
    RecommendationCreatedV1,
    StatusUpdatedV1,
)
from rebalancer.contracts.types import EventType, Identifier, Payload, UtcDatetime
from rebalancer.domain.errors import InvalidInput

P = TypeVar("P", bound=Payload)


class MalformedEvent(InvalidInput):
    """An event could not be decoded or its payload is invalid.

    Consumers send such a message to the dead-letter topic with ``reason`` in the
    :data:`DEAD_LETTER_REASON_PROPERTY` message property, acknowledge it and keep running.

    Parameters
    ----------
    reason
        What is wrong, naming the field, e.g. ``"payload.lots.0.quantity: Input should be
        greater than 0"``.
    fields
        Dotted paths of the offending fields (``envelope.*`` or ``payload.*``).
    """

    code = "malformed_event"

    def __init__(self, reason: str, fields: list[str] | None = None) -> None:
        super().__init__(reason, fields)
        self.reason = reason


class Envelope(BaseModel):
    """The outer record of every event.

    Attributes
    ----------
    event_id
        Unique id; consumers deduplicate on it (a republished event keeps its id).
    type
        The event type.
    version
        Version of the payload schema for ``type``, >= 1.
    occurred_at
        When the change happened (timezone-aware, normalized to UTC).
    tenant_id
        Owning tenant.
    key
        Ordering/partition key, usually the account id (the instrument-free ``"market"`` for
        market data).
    correlation_id
        Ties together the events of one flow (e.g. the rebalance id), if any.
    payload
        The payload as JSON values; parse it with :func:`parse_payload`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID
    type: EventType
    version: int = Field(ge=1)
    occurred_at: UtcDatetime
    tenant_id: Identifier
    key: Identifier
    correlation_id: str | None = None
    payload: dict[str, Any]


PAYLOAD_MODELS: Mapping[tuple[EventType, int], type[Payload]] = {
    (model.EVENT_TYPE, model.VERSION): model
    for model in (
        PortfolioStateUpdatedV1,
        ModelChangedV1,
        MarketDataV1,
        ExecutionReportV1,
        SettlementConfirmedV1,
        DriftAlertV1,
        RebalanceTriggeredV1,
        RecommendationCreatedV1,
        OrderPlacedV1,
        OrderCancelRequestedV1,
        StatusUpdatedV1,
    )
}
"""``(type, version)`` -> payload model, for every version this code understands."""

_TOPIC_PREFIX = "persistent://public/default/rebalancer."

TOPICS: dict[EventType, str] = {
    # inbound
    EventType.PORTFOLIO_STATE_UPDATED: _TOPIC_PREFIX + "portfolio-state",
    EventType.MODEL_CHANGED: _TOPIC_PREFIX + "model-changes",
    EventType.MARKET_DATA: _TOPIC_PREFIX + "market-data",
    EventType.EXECUTION_REPORT: _TOPIC_PREFIX + "execution-reports",
    EventType.SETTLEMENT_CONFIRMED: _TOPIC_PREFIX + "settlements",
    # outbound
    EventType.DRIFT_ALERT: _TOPIC_PREFIX + "drift-alerts",
    EventType.REBALANCE_TRIGGERED: _TOPIC_PREFIX + "rebalance-triggers",
    EventType.RECOMMENDATION_CREATED: _TOPIC_PREFIX + "recommendations",
    EventType.ORDER_PLACED: _TOPIC_PREFIX + "orders",
    EventType.ORDER_CANCEL_REQUESTED: _TOPIC_PREFIX + "orders",
    EventType.STATUS_UPDATED: _TOPIC_PREFIX + "status",
}
"""Event type -> Pulsar topic. Order placements and cancels share one topic (per-order order)."""

INBOUND_TYPES: frozenset[EventType] = frozenset(
    {
        EventType.PORTFOLIO_STATE_UPDATED,
        EventType.MODEL_CHANGED,
        EventType.MARKET_DATA,
        EventType.EXECUTION_REPORT,
        EventType.SETTLEMENT_CONFIRMED,
    }
)
"""Event types the service consumes; the others it publishes."""

OUTBOUND_TYPES: frozenset[EventType] = frozenset(set(EventType) - INBOUND_TYPES)
"""Event types the service publishes."""

MARKET_DATA_KEY = "market"
"""Envelope ``key`` of market-data events (they concern no single account)."""

DEAD_LETTER_SUFFIX = "-DLQ"
DEAD_LETTER_REASON_PROPERTY = "dead_letter_reason"
"""Message property carrying the reason on a dead-lettered message."""


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (``topic + "-DLQ"``)."""
    return topic + DEAD_LETTER_SUFFIX


def message_properties(env: Envelope) -> dict[str, str]:
    """Pulsar message properties for ``env`` (lets brokers and tools filter without decoding)."""
    return {
        "event_id": str(env.event_id),
        "event_type": env.type.value,
        "version": str(env.version),
        "tenant_id": env.tenant_id,
    }


def new_event(
    type: EventType,
    payload_model: Payload,
    *,
    tenant_id: str,
    key: str,
    correlation_id: str | None = None,
    occurred_at: datetime | None = None,
    event_id: UUID | None = None,
) -> Envelope:
    """Wrap a payload model in a new envelope.

    Parameters
    ----------
    type
        The event type; must match the payload model's ``EVENT_TYPE``.
    payload_model
        The payload; its ``VERSION`` becomes the envelope version.
    tenant_id, key, correlation_id
        See :class:`Envelope`.
    occurred_at
        Timezone-aware timestamp; defaults to now (UTC).
    event_id
        Defaults to a random UUID; pass a deterministic one to make re-creation idempotent.

    Raises
    ------
    TypeError
        If ``payload_model`` is not a registered payload of ``type``.
    """
    model_cls = payload_model.__class__
    if PAYLOAD_MODELS.get((type, getattr(model_cls, "VERSION", 0))) is not model_cls:
        raise TypeError(f"{model_cls.__name__} is not a payload of event type {type.value!r}")
    return Envelope(
        event_id=event_id or uuid4(),
        type=type,
        version=model_cls.VERSION,
        occurred_at=occurred_at or datetime.now(UTC),
        tenant_id=tenant_id,
        key=key,
        correlation_id=correlation_id,
        payload=payload_model.to_json_dict(),
    )


def encode(env: Envelope) -> bytes:
    """The envelope as UTF-8 JSON bytes."""
    return env.model_dump_json().encode("utf-8")


def _describe(exc: ValidationError, prefix: str) -> tuple[str, list[str]]:
    parts: list[str] = []
    fields: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [str(x) for x in err["loc"]]
        ctx = err.get("ctx") or {}
        if err["type"] == "invalid_field" and "field" in ctx:
            loc = [*loc, str(ctx["field"])]
            msg = str(ctx.get("detail", err["msg"]))
        else:
            msg = err["msg"]
        path = ".".join([prefix, *loc]) if loc else prefix
        fields.append(path)
        parts.append(f"{path}: {msg}")
    return "; ".join(parts), fields


def decode(data: bytes) -> Envelope:
    """Parse UTF-8 JSON bytes into an :class:`Envelope` (the payload stays a dict).

    Raises
    ------
    MalformedEvent
        If the bytes are not UTF-8 JSON or the envelope is invalid; the reason names the field.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"message is not UTF-8: {exc}") from exc
    try:
        return Envelope.model_validate_json(text)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MalformedEvent(f"message is not valid JSON: {exc.errors()[0]['msg']}") from exc
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise MalformedEvent("message is not a JSON object") from exc
        reason, fields = _describe(exc, "envelope")
        raise MalformedEvent(reason, fields) from exc


def parse_payload(env: Envelope) -> Payload:
    """Validate the envelope's payload with the model of its ``(type, version)``.

    Raises
    ------
    MalformedEvent
        For an unknown ``(type, version)`` or an invalid payload; the reason names the field,
        e.g. ``payload.lots.0.quantity``.
    """
    model = PAYLOAD_MODELS.get((env.type, env.version))
    if model is None:
        known = sorted(v for (t, v) in PAYLOAD_MODELS if t is env.type)
        raise MalformedEvent(
            f"envelope.version: unknown version {env.version} of event type "
            f"{env.type.value!r}; this consumer accepts versions {known}",
            ["envelope.version"],
        )
    try:
        return model.model_validate(env.payload)
    except ValidationError as exc:
        reason, fields = _describe(exc, "payload")
        raise MalformedEvent(f"{env.type.value} v{env.version}: {reason}", fields) from exc


def parse_payload_as(env: Envelope, model: type[P]) -> P:
    """Like :func:`parse_payload` but typed: ``env`` must carry a ``model`` payload.

    Raises
    ------
    MalformedEvent
        If the envelope's ``(type, version)`` is not ``model``'s, or the payload is invalid.
    """
    if (env.type, env.version) != (model.EVENT_TYPE, model.VERSION):
        raise MalformedEvent(
            f"envelope.type: expected {model.EVENT_TYPE.value} v{model.VERSION}, "
            f"got {env.type.value} v{env.version}",
            ["envelope.type", "envelope.version"],
        )
    payload = parse_payload(env)
    assert isinstance(payload, model)
    return payload
