"""Tests of the event envelope, codec, registry and topics."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from rebalancer.contracts import (
    DEAD_LETTER_REASON_PROPERTY,
    INBOUND_TYPES,
    OUTBOUND_TYPES,
    PAYLOAD_MODELS,
    TOPICS,
    Envelope,
    EventType,
    MalformedEvent,
    ModelChangedV1,
    OrderPlacedV1,
    Payload,
    PortfolioStateUpdatedV1,
    dead_letter_topic,
    decode,
    encode,
    message_properties,
    new_event,
    parse_payload,
    parse_payload_as,
)

from .samples import SAMPLES

T0 = datetime(2024, 3, 1, 21, 0, tzinfo=UTC)


def _event(payload: Payload, **kw: Any) -> Envelope:
    return new_event(payload.EVENT_TYPE, payload, tenant_id="demo", key="acct-1", **kw)


def test_every_type_has_a_v1_payload_and_a_sample() -> None:
    assert {t for t, _ in PAYLOAD_MODELS} == set(EventType)
    assert {type(p) for p in SAMPLES} == set(PAYLOAD_MODELS.values())


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip(payload: Payload) -> None:
    env = _event(payload, correlation_id="rb-1", occurred_at=T0)
    data = encode(env)
    assert isinstance(data, bytes)
    back = decode(data)
    assert back == env
    assert back.version == 1
    parsed = parse_payload(back)
    assert parsed == payload
    assert type(parsed) is type(payload)
    assert parse_payload_as(back, type(payload)) == payload


def test_decimals_travel_as_strings_and_keep_precision() -> None:
    state = PortfolioStateUpdatedV1(
        account_id="a",
        as_of=date(2024, 1, 2),
        cash=Decimal("1000.10"),
        lots=[
            {
                "lot_id": "l1",
                "instrument": "AAPL",
                "quantity": "0.123456789",
                "cost_basis": "101.25",
                "acquired": "2023-01-05",
            }
        ],
    )
    raw = json.loads(encode(_event(state)))
    assert raw["payload"]["cash"] == "1000.10"
    assert raw["payload"]["lots"][0]["quantity"] == "0.123456789"
    parsed = parse_payload_as(decode(encode(_event(state))), PortfolioStateUpdatedV1)
    assert parsed.lots[0].quantity == Decimal("0.123456789")


def test_new_event_defaults() -> None:
    env = _event(SAMPLES[0])
    assert isinstance(env.event_id, UUID)
    assert env.occurred_at.tzinfo is not None
    assert env.occurred_at.utcoffset() == timedelta(0)
    assert env.correlation_id is None


def test_occurred_at_is_normalized_to_utc() -> None:
    plus2 = datetime(2024, 3, 1, 23, 0, tzinfo=timezone(timedelta(hours=2)))
    env = _event(SAMPLES[0], occurred_at=plus2)
    assert env.occurred_at == T0
    assert env.occurred_at.tzinfo == UTC


def test_naive_occurred_at_is_rejected() -> None:
    raw = json.loads(encode(_event(SAMPLES[0])))
    raw["occurred_at"] = "2024-03-01T21:00:00"
    with pytest.raises(MalformedEvent) as info:
        decode(json.dumps(raw).encode())
    assert "envelope.occurred_at" in info.value.reason


def test_new_event_refuses_a_payload_of_another_type() -> None:
    with pytest.raises(TypeError):
        new_event(EventType.ORDER_PLACED, SAMPLES[0], tenant_id="t", key="k")


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"\xff\xfe", b"[1, 2]", b"42", b"null", b'{"type": "order_placed"}'],
)
def test_malformed_bytes(data: bytes) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode(data)
    assert info.value.reason


def test_envelope_errors_name_the_field() -> None:
    raw = json.loads(encode(_event(SAMPLES[0])))
    raw["version"] = 0
    raw["type"] = "no_such_type"
    with pytest.raises(MalformedEvent) as info:
        decode(json.dumps(raw).encode())
    assert "envelope.version" in info.value.fields
    assert "envelope.type" in info.value.fields
    assert "envelope.version" in info.value.reason


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    env = _event(SAMPLES[0])
    raw = json.loads(encode(env))
    raw["new_envelope_field"] = 1
    raw["payload"]["new_payload_field"] = "x"
    back = decode(json.dumps(raw).encode())
    assert parse_payload(back) == SAMPLES[0]


def test_unknown_version_is_malformed() -> None:
    env = _event(SAMPLES[0]).model_copy(update={"version": 99})
    back = decode(encode(env))
    with pytest.raises(MalformedEvent) as info:
        parse_payload(back)
    assert "version" in info.value.reason
    assert "99" in info.value.reason
    assert info.value.fields == ["envelope.version"]


def test_parse_payload_as_checks_the_type() -> None:
    env = _event(SAMPLES[0])
    with pytest.raises(MalformedEvent):
        parse_payload_as(env, OrderPlacedV1)


def _order_payload() -> dict[str, Any]:
    return {
        "order_id": "o-1",
        "recommendation_id": "r-1",
        "account_id": "acct-1",
        "instrument": "AAPL",
        "side": "sell",
        "quantity": "10",
        "order_type": "market",
        "time_in_force": "day",
        "lots": [{"lot_id": "L1", "quantity": "4"}, {"lot_id": "L2", "quantity": "6"}],
        "arrival_price": "190.10",
    }


def _raw_event(type_: EventType, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "event_id": "9b2f7a52-0b7b-4f57-9f59-3c8f4f0c9c11",
            "type": type_.value,
            "version": 1,
            "occurred_at": "2024-03-01T21:00:00Z",
            "tenant_id": "demo",
            "key": "acct-1",
            "payload": payload,
        }
    ).encode()


def test_a_raw_integrator_message_parses() -> None:
    order = parse_payload_as(
        decode(_raw_event(EventType.ORDER_PLACED, _order_payload())), OrderPlacedV1
    )
    assert order.quantity == Decimal(10)
    assert [lot.lot_id for lot in order.lots] == ["L1", "L2"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quantity": "-3"}, "payload.quantity"),
        ({"quantity": "abc"}, "payload.quantity"),
        ({"quantity": "NaN"}, "payload.quantity"),
        ({"side": "short"}, "payload.side"),
        ({"arrival_price": "0"}, "payload.arrival_price"),
        ({"order_type": "limit"}, "payload.limit_price"),
        ({"limit_price": "10"}, "payload.limit_price"),
        ({"lots": [{"lot_id": "L1", "quantity": "4"}]}, "payload.lots"),
        ({"lots": [{"lot_id": "L1", "quantity": "0"}]}, "payload.lots.0.quantity"),
        ({"instrument": ""}, "payload.instrument"),
        ({"account_id": None}, "payload.account_id"),
        ({"time_in_force": "forever"}, "payload.time_in_force"),
    ],
)
def test_bad_payload_names_the_field(change: dict[str, Any], field: str) -> None:
    env = decode(_raw_event(EventType.ORDER_PLACED, {**_order_payload(), **change}))
    with pytest.raises(MalformedEvent) as info:
        parse_payload(env)
    assert field in info.value.fields
    assert field in info.value.reason


def test_missing_payload_field_is_named() -> None:
    payload = _order_payload()
    del payload["arrival_price"]
    with pytest.raises(MalformedEvent) as info:
        parse_payload(decode(_raw_event(EventType.ORDER_PLACED, payload)))
    assert info.value.fields == ["payload.arrival_price"]
    assert "Field required" in info.value.reason


def test_topics() -> None:
    assert set(TOPICS) == set(EventType)
    assert set(EventType) == INBOUND_TYPES | OUTBOUND_TYPES
    assert not INBOUND_TYPES & OUTBOUND_TYPES
    for topic in TOPICS.values():
        assert topic.startswith("persistent://public/default/rebalancer.")
    assert TOPICS[EventType.ORDER_PLACED] == TOPICS[EventType.ORDER_CANCEL_REQUESTED]
    assert TOPICS[EventType.PORTFOLIO_STATE_UPDATED].endswith("rebalancer.portfolio-state")
    assert TOPICS[EventType.STATUS_UPDATED].endswith("rebalancer.status")
    assert len(set(TOPICS.values())) == len(TOPICS) - 1
    assert dead_letter_topic(TOPICS[EventType.ORDER_PLACED]).endswith("rebalancer.orders-DLQ")


def test_message_properties() -> None:
    env = _event(ModelChangedV1(model_id="m", version=1, targets={"A": 1.0}))
    props = message_properties(env)
    assert props["event_id"] == str(env.event_id)
    assert props["event_type"] == "model_changed"
    assert props["version"] == "1"
    assert all(isinstance(v, str) for v in props.values())
    assert DEAD_LETTER_REASON_PROPERTY not in props


def test_malformed_event_is_an_invalid_input() -> None:
    from rebalancer.domain.errors import InvalidInput

    err = MalformedEvent("payload.x: bad", ["payload.x"])
    assert isinstance(err, InvalidInput)
    assert err.reason == err.detail == "payload.x: bad"
