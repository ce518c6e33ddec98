"""Validation rules of the payload models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.contracts import (
    EventType,
    ExecutionReportV1,
    MalformedEvent,
    MarketDataV1,
    ModelChangedV1,
    Payload,
    PortfolioStateUpdatedV1,
    RecommendationCreatedV1,
    ReportKind,
    SettlementConfirmedV1,
    decode,
    encode,
    new_event,
    parse_payload,
)
from rebalancer.contracts.events import PAYLOAD_MODELS
from rebalancer.domain.model import ModelPortfolio, TaxLot

from .samples import SAMPLES


def _fields_of_bad(model: type[Payload], data: dict[str, Any]) -> list[str]:
    env = new_event(model.EVENT_TYPE, _sample(model), tenant_id="t", key="k").model_copy(
        update={"payload": data}
    )
    with pytest.raises(MalformedEvent) as info:
        parse_payload(decode(encode(env)))
    return info.value.fields


def _sample(model: type[Payload]) -> Payload:
    return next(p for p in SAMPLES if type(p) is model)


def _raw(model: type[Payload]) -> dict[str, Any]:
    return _sample(model).to_json_dict()


# ---------------------------------------------------------------- portfolio state
def test_portfolio_state_to_domain_lots() -> None:
    state = _sample(PortfolioStateUpdatedV1)
    assert isinstance(state, PortfolioStateUpdatedV1)
    lot = state.lots[0].to_domain()
    assert isinstance(lot, TaxLot)
    assert lot.quantity == Decimal(40)
    assert state.replace is True


@pytest.mark.parametrize(
    ("lot_change", "field"),
    [
        ({"quantity": "-1"}, "payload.lots.0.quantity"),
        ({"cost_basis": "-0.01"}, "payload.lots.0.cost_basis"),
        ({"acquired": "2024-13-01"}, "payload.lots.0.acquired"),
        ({"acquired": "2025-01-01"}, "payload.lots.0.acquired"),
    ],
)
def test_portfolio_state_bad_lot(lot_change: dict[str, Any], field: str) -> None:
    raw = _raw(PortfolioStateUpdatedV1)
    raw["lots"][0].update(lot_change)
    assert field in _fields_of_bad(PortfolioStateUpdatedV1, raw)


def test_portfolio_state_duplicate_lot_and_negative_cash() -> None:
    raw = _raw(PortfolioStateUpdatedV1)
    raw["lots"].append(dict(raw["lots"][0]))
    assert _fields_of_bad(PortfolioStateUpdatedV1, raw) == ["payload.lots.1.lot_id"]
    raw = _raw(PortfolioStateUpdatedV1)
    raw["cash"] = "-5"
    assert _fields_of_bad(PortfolioStateUpdatedV1, raw) == ["payload.cash"]


# ---------------------------------------------------------------- model change
def test_model_changed_to_domain() -> None:
    model = _sample(ModelChangedV1)
    assert isinstance(model, ModelChangedV1)
    domain = model.to_domain()
    assert isinstance(domain, ModelPortfolio)
    assert domain.weights()["CASH"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"targets": {"AAPL": 0.5, "AGG": 0.4}}, "payload.targets"),
        ({"targets": {"AAPL": -0.1, "AGG": 1.05}}, "payload.targets.AAPL"),
        ({"targets": {"AAPL": 0.5, "CASH": 0.45}}, "payload.targets"),
        ({"cash_target": -0.05}, "payload.cash_target"),
        ({"version": 0}, "payload.version"),
    ],
)
def test_model_changed_bad(change: dict[str, Any], field: str) -> None:
    raw = {**_raw(ModelChangedV1), **change}
    assert field in _fields_of_bad(ModelChangedV1, raw)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_model_changed_accepts_any_normalized_weights(raw: list[float]) -> None:
    total = sum(raw) + 1.0
    targets = {f"I{i}": w / total for i, w in enumerate(raw)}
    model = ModelChangedV1(model_id="m", version=1, targets=targets, cash_target=1.0 / total)
    assert sum(model.targets.values()) + model.cash_target == pytest.approx(1.0)


# ---------------------------------------------------------------- market data
def test_market_data() -> None:
    md = _sample(MarketDataV1)
    assert isinstance(md, MarketDataV1)
    assert md.closes()["AGG"] == Decimal("97.40")
    raw = _raw(MarketDataV1)
    raw["bars"][0]["close"] = "0"
    assert _fields_of_bad(MarketDataV1, raw) == ["payload.bars.0.close"]
    raw = _raw(MarketDataV1)
    raw["bars"][1]["instrument"] = "AAPL"
    assert _fields_of_bad(MarketDataV1, raw) == ["payload.bars.1.instrument"]
    raw = _raw(MarketDataV1)
    raw["bars"][0]["daily_volatility"] = -0.1
    assert _fields_of_bad(MarketDataV1, raw) == ["payload.bars.0.daily_volatility"]
    assert _fields_of_bad(MarketDataV1, {"as_of": "2024-01-02", "bars": []}) == ["payload.bars"]


# ---------------------------------------------------------------- execution report
def _report(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "report_id": "r",
        "order_id": "o",
        "account_id": "a",
        "instrument": "AAPL",
        "side": "buy",
        "kind": "ack",
        "sequence": 1,
        "venue_time": "2024-03-01T15:00:00+00:00",
    }
    return {**base, **kw}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_report(kind="fill", fill_quantity="5", cumulative_quantity="5"), "payload.fill_price"),
        (_report(kind="fill", fill_price="1", cumulative_quantity="5"), "payload.fill_quantity"),
        (_report(fill_quantity="5", cumulative_quantity="5"), "payload.fill_quantity"),
        (_report(fill_price="5"), "payload.fill_price"),
        (
            _report(kind="fill", fill_quantity="5", fill_price="1", cumulative_quantity="4"),
            "payload.cumulative_quantity",
        ),
        (_report(kind="rejected"), "payload.reason"),
        (_report(sequence=0), "payload.sequence"),
        (_report(kind="filled"), "payload.kind"),
        (_report(venue_time="2024-03-01T15:00:00"), "payload.venue_time"),
    ],
)
def test_execution_report_bad(data: dict[str, Any], field: str) -> None:
    assert field in _fields_of_bad(ExecutionReportV1, data)


def test_report_kinds() -> None:
    assert ReportKind.FILL.is_final and ReportKind.FILL.is_fill
    assert not ReportKind.PARTIAL_FILL.is_final and ReportKind.PARTIAL_FILL.is_fill
    assert not ReportKind.ACK.is_final
    assert ReportKind.EXPIRED.is_final and not ReportKind.EXPIRED.is_fill
    rep = ExecutionReportV1.model_validate(_report(kind="rejected", reason="price band"))
    assert rep.venue_time == datetime(2024, 3, 1, 15, tzinfo=UTC)


# ---------------------------------------------------------------- settlement
def test_settlement() -> None:
    stl = _sample(SettlementConfirmedV1)
    assert isinstance(stl, SettlementConfirmedV1)
    assert stl.gross_amount == Decimal(25) * Decimal("179.71")
    raw = _raw(SettlementConfirmedV1)
    raw["settle_date"] = "2024-02-28"
    assert _fields_of_bad(SettlementConfirmedV1, raw) == ["payload.settle_date"]
    raw = _raw(SettlementConfirmedV1)
    raw["status"] = "failed"
    assert _fields_of_bad(SettlementConfirmedV1, raw) == ["payload.reason"]
    raw = _raw(SettlementConfirmedV1)
    raw["quantity"] = "0"
    assert _fields_of_bad(SettlementConfirmedV1, raw) == ["payload.quantity"]


# ---------------------------------------------------------------- outbound
def test_recommendation_decision_matches_trades() -> None:
    raw = _raw(RecommendationCreatedV1)
    raw["decision"] = "no_trade"
    assert _fields_of_bad(RecommendationCreatedV1, raw) == ["payload.trades"]
    raw["trades"] = []
    env = new_event(
        EventType.RECOMMENDATION_CREATED,
        RecommendationCreatedV1.model_validate(raw),
        tenant_id="t",
        key="k",
    )
    assert parse_payload(env).model_dump()["decision"] == "no_trade"
    raw = _raw(RecommendationCreatedV1)
    raw["trades"][0]["quantity"] = "-12"
    assert _fields_of_bad(RecommendationCreatedV1, raw) == ["payload.trades.0.quantity"]


def test_payloads_are_immutable() -> None:
    sample = _sample(ModelChangedV1)
    with pytest.raises(ValueError):
        sample.version = 4  # type: ignore[misc]


def test_registry_versions() -> None:
    assert all(version == 1 for _, version in PAYLOAD_MODELS)
