"""The versioned event contract: envelope, payload models, codec and topics.

Import everything from here::

    from rebalancer.contracts import EventType, OrderPlacedV1, new_event, encode, decode

See ``docs/events.md`` for the contract as integrators see it.
"""

from rebalancer.contracts.events import (
    DEAD_LETTER_REASON_PROPERTY,
    DEAD_LETTER_SUFFIX,
    INBOUND_TYPES,
    MARKET_DATA_KEY,
    OUTBOUND_TYPES,
    PAYLOAD_MODELS,
    TOPICS,
    Envelope,
    MalformedEvent,
    dead_letter_topic,
    decode,
    encode,
    message_properties,
    new_event,
    parse_payload,
    parse_payload_as,
)
from rebalancer.contracts.inbound import (
    BarV1,
    ExecutionReportV1,
    LotV1,
    MarketDataV1,
    ModelChangedV1,
    PortfolioStateUpdatedV1,
    SettlementConfirmedV1,
)
from rebalancer.contracts.outbound import (
    DriftAlertV1,
    OrderCancelRequestedV1,
    OrderLotV1,
    OrderPlacedV1,
    RebalanceTriggeredV1,
    RecommendationCreatedV1,
    StatusUpdatedV1,
    TradeV1,
)
from rebalancer.contracts.types import (
    AlertState,
    Decision,
    EventType,
    OrderType,
    Payload,
    ReportKind,
    SettlementStatus,
    Severity,
    Side,
    StatusEntity,
    TimeInForce,
)

__all__ = [
    "DEAD_LETTER_REASON_PROPERTY",
    "DEAD_LETTER_SUFFIX",
    "INBOUND_TYPES",
    "MARKET_DATA_KEY",
    "OUTBOUND_TYPES",
    "PAYLOAD_MODELS",
    "TOPICS",
    "AlertState",
    "BarV1",
    "Decision",
    "DriftAlertV1",
    "Envelope",
    "EventType",
    "ExecutionReportV1",
    "LotV1",
    "MalformedEvent",
    "MarketDataV1",
    "ModelChangedV1",
    "OrderCancelRequestedV1",
    "OrderLotV1",
    "OrderPlacedV1",
    "OrderType",
    "Payload",
    "PortfolioStateUpdatedV1",
    "RebalanceTriggeredV1",
    "RecommendationCreatedV1",
    "ReportKind",
    "SettlementConfirmedV1",
    "SettlementStatus",
    "Severity",
    "Side",
    "StatusEntity",
    "StatusUpdatedV1",
    "TimeInForce",
    "TradeV1",
    "dead_letter_topic",
    "decode",
    "encode",
    "message_properties",
    "new_event",
    "parse_payload",
    "parse_payload_as",
]
