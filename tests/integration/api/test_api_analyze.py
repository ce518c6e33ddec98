"""The stateless POST /v1/analyze: answers, infeasible policies and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from apihelpers import READ, ok
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def _request(**policy: Any) -> dict[str, Any]:
    return {
        "as_of": "2024-06-28",
        "portfolio": {
            "cash": 1000,
            "lots": [
                {"lot_id": "L1", "instrument": "A", "quantity": 100, "cost_basis": 80,
                 "acquired": "2022-01-03"},
                {"lot_id": "L2", "instrument": "B", "quantity": 50, "cost_basis": 120,
                 "acquired": "2024-03-01"},
            ],
        },
        "targets": {"A": 0.3, "B": 0.3, "C": 0.3, "CASH": 0.1},
        "instruments": [
            {"id": "A", "price": 100},
            {"id": "B", "price": 100},
            {"id": "C", "price": 50},
        ],
        "risk_model": {
            "instruments": ["A", "B", "C"],
            "covariance": [[0.04, 0, 0], [0, 0.04, 0], [0, 0, 0.04]],
        },
        "policy": policy,
    }  # fmt: skip


def test_analyze_recommends_trades(client: TestClient) -> None:
    body = ok(client.post("/v1/analyze", json=_request(), headers=READ))
    assert body["decision"] == "rebalance"
    assert {t["instrument"] for t in body["trades"]} >= {"C"}
    assert body["nav"] == pytest.approx(1000 + 100 * 100 + 50 * 100)
    for t in body["trades"]:
        assert t["explanation"] and t["side"] in ("buy", "sell")


def test_infeasible_policy_is_422_naming_the_conflicting_fields(client: TestClient) -> None:
    resp = client.post(
        "/v1/analyze", json=_request(min_cash_weight=0.5, max_turnover=0.01), headers=READ
    )
    assert resp.status_code == 422, resp.text
    err = resp.json()
    assert err["error"] == "infeasible"
    assert set(err["fields"]) == {"body.policy.min_cash_weight", "body.policy.max_turnover"}


def test_targets_not_summing_to_one_is_422(client: TestClient) -> None:
    req = _request()
    req["targets"] = {"A": 0.5, "B": 0.3, "C": 0.1}
    resp = client.post("/v1/analyze", json=req, headers=READ)
    assert resp.status_code == 422, resp.text
    assert any(f.startswith("body.targets") for f in resp.json()["fields"])


def test_negative_price_is_422_naming_the_field(client: TestClient) -> None:
    req = _request()
    req["instruments"][1]["price"] = -3
    resp = client.post("/v1/analyze", json=req, headers=READ)
    assert resp.status_code == 422
    assert resp.json()["fields"] == ["body.instruments.1.price"]
