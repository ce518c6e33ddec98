"""One valid sample payload per event type (also the examples of docs/events.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from rebalancer.contracts import (
    DriftAlertV1,
    ExecutionReportV1,
    MarketDataV1,
    ModelChangedV1,
    OrderCancelRequestedV1,
    OrderPlacedV1,
    Payload,
    PortfolioStateUpdatedV1,
    RebalanceTriggeredV1,
    RecommendationCreatedV1,
    SettlementConfirmedV1,
    StatusUpdatedV1,
)

D = Decimal

SAMPLES: list[Payload] = [
    PortfolioStateUpdatedV1.model_validate(
        {
            "account_id": "acct-001",
            "as_of": "2024-03-01",
            "cash": "12500.00",
            "lots": [
                {
                    "lot_id": "acct-001-AAPL-1",
                    "instrument": "AAPL",
                    "quantity": "40",
                    "cost_basis": "142.17",
                    "acquired": "2022-11-03",
                }
            ],
        }
    ),
    ModelChangedV1(
        model_id="balanced",
        version=3,
        targets={"AAPL": 0.3, "AGG": 0.65},
        cash_target=0.05,
        name="Balanced",
    ),
    MarketDataV1.model_validate(
        {
            "as_of": "2024-03-01",
            "bars": [
                {
                    "instrument": "AAPL",
                    "close": "179.66",
                    "volume": "73488000",
                    "adv_shares": "58000000",
                    "daily_volatility": 0.013,
                    "half_spread_bps": 1.2,
                },
                {"instrument": "AGG", "close": "97.40"},
            ],
        }
    ),
    ExecutionReportV1(
        report_id="o-1:3",
        order_id="o-1",
        account_id="acct-001",
        instrument="AAPL",
        side="buy",
        kind="partial_fill",
        fill_quantity=D(25),
        fill_price=D("179.71"),
        cumulative_quantity=D(40),
        sequence=3,
        venue_time=datetime(2024, 3, 1, 15, 30, tzinfo=UTC),
    ),
    SettlementConfirmedV1(
        settlement_id="stl-o-1:3",
        report_id="o-1:3",
        order_id="o-1",
        account_id="acct-001",
        instrument="AAPL",
        side="buy",
        quantity=D(25),
        price=D("179.71"),
        trade_date=date(2024, 3, 1),
        settle_date=date(2024, 3, 4),
        status="settled",
    ),
    DriftAlertV1(
        account_id="acct-001",
        as_of=date(2024, 3, 1),
        level="instrument",
        key="AAPL",
        drift=0.031,
        band=0.02,
        severity="warning",
        state="raised",
    ),
    RebalanceTriggeredV1(
        account_id="acct-001",
        rebalance_id="rb-acct-001-2024-03-01",
        reasons=["drift:instrument:AAPL"],
        priority=1,
        as_of=date(2024, 3, 1),
    ),
    RecommendationCreatedV1.model_validate(
        {
            "recommendation_id": "rec-1",
            "account_id": "acct-001",
            "rebalance_id": "rb-acct-001-2024-03-01",
            "decision": "rebalance",
            "trades": [
                {"instrument": "AAPL", "side": "sell", "quantity": "12", "value": "2155.92"},
                {"instrument": "AGG", "side": "buy", "quantity": "22", "value": "2142.80"},
            ],
            "net_benefit": "18.40",
        }
    ),
    OrderPlacedV1.model_validate(
        {
            "order_id": "o-1",
            "recommendation_id": "rec-1",
            "account_id": "acct-001",
            "instrument": "AAPL",
            "side": "sell",
            "quantity": "12",
            "order_type": "limit",
            "limit_price": "178.00",
            "time_in_force": "day",
            "lots": [{"lot_id": "acct-001-AAPL-1", "quantity": "12"}],
            "arrival_price": "179.66",
        }
    ),
    OrderCancelRequestedV1(order_id="o-1", account_id="acct-001", reason="user request"),
    StatusUpdatedV1(
        entity="order",
        entity_id="o-1",
        account_id="acct-001",
        status="filled",
        previous="partially_filled",
    ),
]
