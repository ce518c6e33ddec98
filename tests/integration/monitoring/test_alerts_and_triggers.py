"""Alerts with hysteresis, coalescing, priorities, cooldown and suppression, the rule trigger,
manual requests and model config validation, through the service on the real database."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from monhelpers import QUIET, Book

from rebalancer.adapters import orm
from rebalancer.domain.errors import InvalidInput
from rebalancer.domain.model import ModelPortfolio
from rebalancer.service_layer.handlers import monitoring, portfolio

pytestmark = pytest.mark.integration

ONE = {"A": ("tech", "equity")}
# one instrument A with target .5, 100 shares and 10,000 cash: drift(A) = w - .5 where
# w = 100 p / (100 p + 10000); p = 122.72 -> +5.1 %, 121.73 -> +4.9 %, 117 -> +3.9 %,
# 160 -> +11.5 % (critical at 2 x 5 %).
HOVER = [122.72, 121.73, 122.72, 121.73, 122.72, 121.73]


def _only_a(bands: dict[str, Any]) -> dict[str, Any]:
    return {**QUIET, "asset_class": None, "account": None, **bands}


def _setup(bk: Book, bands: dict[str, Any], rule: dict[str, Any] | None = None) -> tuple[str, str]:
    i = bk.instruments(ONE)
    mid = bk.model({i["A"]: 0.5}, 0.5, _only_a(bands), rule)
    aid = bk.account({mid: 1.0}, {i["A"]: 100}, "10000")
    return aid, i["A"]


def test_hysteresis_no_alert_storm(engine: Any) -> None:
    bk = Book(engine)
    aid, a = _setup(bk, {"instrument": 0.05, "alerts": {"hysteresis": 0.2}})
    for p in HOVER:  # hovers around the 5 % band: one alert, never cleared in between
        bk.tick({a: p})
    alerts = [x for x in bk.alerts(aid) if x.key == a]
    assert len(alerts) == 1 and alerts[0].state == "raised" and alerts[0].severity == "warning"
    events = [e for e in bk.alert_events(aid) if e["key"] == a]
    assert [(e["state"], e["severity"]) for e in events] == [("raised", "warning")]
    bk.tick({a: 160.0})  # +11.5 %: escalates, same alert
    bk.tick({a: 122.72})  # +5.1 %: de-escalates below 10 % * 0.8
    bk.tick({a: 118.5})  # +4.2 %: above the 4 % clear level, stays raised
    bk.tick({a: 117.0})  # +3.9 %: cleared
    alerts = [x for x in bk.alerts(aid) if x.key == a]
    assert len(alerts) == 1 and alerts[0].state == "cleared"
    events = [(e["state"], e["severity"]) for e in bk.alert_events(aid) if e["key"] == a]
    assert events == [
        ("raised", "warning"),
        ("raised", "critical"),
        ("raised", "warning"),
        ("cleared", "warning"),
    ]
    with bk.uow() as uow:  # acknowledge works on the stored alert
        row = uow.rebalancing.acknowledge_alert(aid, alerts[0].id, "ops")
        uow.commit()
    assert row.acknowledged_by == "ops"


def test_coalescing_priority_and_every_reason(engine: Any) -> None:
    bk = Book(engine)
    rule = {
        "name": "big-drift",
        "priority": 90,
        "rule": {"all": [{"signal": "drift.max_abs", "op": ">=", "value": 0.04}]},
    }
    aid, a = _setup(bk, {"instrument": 0.03}, rule)
    bk.tick({a: 122.72})  # threshold (60) and rule (90) fire together
    (reb,) = bk.rebalances(aid)
    assert reb.priority == 90 and reb.status == "requested"
    kinds = {r.split(":", 1)[0] for r in reb.reasons}
    assert kinds == {"threshold", "rule"}
    fired = [e for e in bk.evaluations(aid) if e.fired]
    assert {e.kind for e in fired} == {"threshold", "rule"}
    assert {e.rebalance_id for e in fired} == {reb.id}
    assert fired[0].inputs["coalesced"]["priority"] == 90
    # later ticks and a manual request join the same rebalance; reasons do not pile up
    bk.tick({a: 125.0})
    bk.tick({a: 126.0})
    with bk.uow() as uow:
        rid, created = monitoring.manual_request(uow, aid, "pm", "client call", 95, commit=True)
    assert rid == reb.id and created is False
    (reb,) = bk.rebalances(aid)
    assert reb.priority == 95 and len(reb.reasons) == 3 and "client call" in reb.reasons
    (manual,) = bk.evaluations(aid, "manual")
    assert manual.fired and manual.rebalance_id == reb.id
    assert manual.inputs["requested_by"] == "pm" and manual.inputs["note"] == "client call"
    assert manual.inputs["priority"] == 95


def test_manual_request_idempotency_key(engine: Any) -> None:
    bk = Book(engine)
    aid, _ = _setup(bk, {})
    with bk.uow() as uow:
        first = monitoring.manual_request(uow, aid, "pm", "go", 10, idempotency_key="k1")
        uow.commit()
    with bk.uow() as uow:
        again = monitoring.manual_request(uow, aid, "pm", "go", 10, idempotency_key="k1")
        uow.commit()
    assert first[1] is True and again == (first[0], False)
    assert len(bk.evaluations(aid, "manual")) == 1 and len(bk.rebalances(aid)) == 1


def _finish(bk: Book, aid: str) -> None:
    with bk.uow() as uow:
        for r in bk.rebalances(aid):
            uow.rebalancing.set_rebalance_status(r.id, "complete")
        uow.commit()


def test_cooldown_suppression_is_recorded(engine: Any) -> None:
    bk = Book(engine)
    aid, a = _setup(bk, {"instrument": 0.03, "policy": {"cooldown_hours": 24}})
    bk.tick({a: 122.72})
    (reb,) = bk.rebalances(aid)
    _finish(bk, aid)
    bk.tick({a: 123.0})  # within 24 h (database clock) of the last rebalance
    assert len(bk.rebalances(aid)) == 1
    last = bk.evaluations(aid, "threshold")[-1]
    assert not last.fired and last.reason.startswith("suppressed (cooldown until")
    assert last.inputs["gate"]["suppressed_by"] == ["cooldown"] and last.inputs["suppressed"]
    with engine.begin() as conn:  # the last rebalance started two days ago: allowed again
        conn.execute(
            sa.update(orm.rebalances)
            .where(orm.rebalances.c.id == reb.id)
            .values(created_at=sa.func.now() - sa.text("interval '2 days'"))
        )
    bk.tick({a: 124.0})
    assert len(bk.rebalances(aid)) == 2 and bk.evaluations(aid, "threshold")[-1].fired


def test_market_closed_and_open_orders_suppression(engine: Any) -> None:
    bk = Book(engine)
    # bars are stamped 21:00 UTC (after the New York close): closed when the policy says so
    aid, a = _setup(bk, {"instrument": 0.03, "policy": {"suppress_market_closed": ["market_data"]}})
    bk.tick({a: 122.72})
    assert bk.rebalances(aid) == []
    last = bk.evaluations(aid, "threshold")[-1]
    assert not last.fired and "market closed" in last.reason
    assert last.inputs["gate"]["suppressed_by"] == ["market_closed"]

    bk2 = Book(engine)
    aid2, a2 = _setup(bk2, {"instrument": 0.03})
    bk2.tick({a2: 122.72})
    (reb,) = bk2.rebalances(aid2)
    with bk2.uow() as uow:  # the rebalance is trading: an order is still working
        rec = uow.rebalancing.add_recommendation(
            reb.id, aid2, "rebalance", "approved", Decimal(0), {}, {}
        )
        uow.rebalancing.insert_orders(
            [
                {
                    "id": uuid.uuid4(),
                    "recommendation_id": rec,
                    "account_id": aid2,
                    "instrument": a2,
                    "side": "sell",
                    "quantity": Decimal(5),
                    "status": "sent",
                }
            ]
        )
        uow.rebalancing.set_rebalance_status(reb.id, "trading")
        uow.commit()
    bk2.tick({a2: 123.5})
    last = bk2.evaluations(aid2, "threshold")[-1]
    assert not last.fired and "1 orders still open" in last.reason
    assert last.inputs["gate"]["suppressed_by"] == ["open_orders"]
    assert len(bk2.rebalances(aid2)) == 1


def test_every_evaluation_is_logged_with_inputs(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments({"A": ("tech", "equity"), "B": ("tech", "equity")})
    bands = {
        "instrument": 0.5,
        "signals": {
            "volatility_regime": {"short_window": 2, "long_window": 4, "ratio_threshold": 50},
            "correlation_change": {"window": 3, "threshold": 1.5},
            "market_condition": {"index": i["B"], "drawdown_threshold": 0.2},
            "risk_budget": {"vol_budget": 5.0},
        },
    }
    mid = bk.model({i["A"]: 0.5, i["B"]: 0.5}, 0.0, bands)
    aid = bk.account({mid: 1.0}, {i["A"]: 10, i["B"]: 10}, "0")
    for k in range(7):
        bk.tick({i["A"]: 10 + k % 3, i["B"]: 20 - k})  # B (the index) falls 30 %
    kinds = [e.kind for e in bk.evaluations(aid)]
    assert kinds.count("threshold") == 7 and kinds.count("volatility_regime") == 7
    assert kinds.count("correlation_change") == 7 and kinds.count("market_condition") == 7
    assert kinds.count("risk_budget") == 7
    last = {e.kind: e for e in bk.evaluations(aid)}
    assert "ratio" in last["volatility_regime"].inputs
    assert "distance" in last["correlation_change"].inputs
    mc = last["market_condition"]
    assert mc.inputs["drawdown"] == pytest.approx(1 - 14 / 20)
    # the drawdown fired (70) and the open rebalance it started is joined on later ticks
    assert mc.fired and mc.rebalance_id is not None
    (reb,) = bk.rebalances(aid)
    assert reb.priority == 70 and any(r.startswith("market_condition") for r in reb.reasons)


def test_bad_rule_definition_names_the_part(engine: Any) -> None:
    bk = Book(engine)
    i = bk.instruments(ONE)
    bad = {
        "name": "x",
        "rule": {"any": [{"signal": "drift.max_abs", "op": ">", "value": 0.1}, {"not": 3}]},
    }
    with bk.uow() as uow, pytest.raises(InvalidInput) as e:
        portfolio.save_model(uow, ModelPortfolio("m-bad", 0, {i["A"]: 1.0}, 0.0), {}, bad)
    assert e.value.fields == ["trigger_rule.rule.any[1].not"]
    with bk.uow() as uow, pytest.raises(InvalidInput) as e:
        portfolio.save_model(
            uow,
            ModelPortfolio("m-bad", 0, {i["A"]: 1.0}, 0.0),
            {"schedules": [{"id": "q", "frequency": "yearly"}]},
        )
    assert e.value.fields == ["bands.schedules[0].frequency"]
