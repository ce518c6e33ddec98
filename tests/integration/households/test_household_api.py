"""Household API round trips on the real database: settings, drift, the stored household
rebalance (one approvable recommendation per account) and the stateless analysis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "test-admin-key"}


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def _prices(engine: Any, prices: dict[str, float]) -> None:
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    with UnitOfWork(engine, "tenant-a") as uow:
        uow.market.add_bars(
            datetime(2024, 6, 3, 21, tzinfo=UTC),
            [
                {
                    "instrument": i,
                    "close": Decimal(str(p)),
                    "adv_shares": 1e6,
                    "daily_volatility": 0.01,
                    "half_spread_bps": 5.0,
                }
                for i, p in prices.items()
            ],
        )
        uow.commit()


@pytest.fixture()
def household(client: TestClient, engine: Any) -> dict[str, Any]:
    """A taxable and a tax-deferred account, all cash, following a 50/50 EQ/BND model."""
    eq, bnd = _id("EQ").upper(), _id("BND").upper()
    ok(client.post("/v1/instruments", json={"id": eq}, headers=ADMIN), 201)
    body = {"id": bnd, "asset_class": "fixed_income"}
    ok(client.post("/v1/instruments", json=body, headers=ADMIN), 201)
    _prices(engine, {eq: 100.0, bnd: 50.0})
    mid = _id("m")
    model = {"id": mid, "targets": {eq: 0.5, bnd: 0.5}, "cash_target": 0.0}
    ok(client.post("/v1/models", json=model, headers=ADMIN), 201)
    hh = _id("hh")
    accounts = {}
    for kind in ("taxable", "tax_deferred"):
        aid = _id("acct")
        acct = {
            "id": aid,
            "household_id": hh,
            "tax_type": kind,
            "cash": "100000",
            "sleeves": [{"id": _id("sl"), "model_id": mid, "share": 1.0}],
        }
        ok(client.post("/v1/accounts", json=acct, headers=ADMIN), 201)
        accounts[kind] = aid
    return {"id": hh, "eq": eq, "bnd": bnd, "accounts": accounts}


def test_household_rebalance_round_trip(client: TestClient, household: dict[str, Any]) -> None:
    hh, eq, bnd = household["id"], household["eq"], household["bnd"]
    tax, ira = household["accounts"]["taxable"], household["accounts"]["tax_deferred"]
    put = {"targets": {eq: 0.5, bnd: 0.5}, "links": []}
    got = ok(client.put(f"/v1/households/{hh}", json=put, headers=ADMIN))
    assert got["account_ids"] == sorted([tax, ira]) and got["targets"] == put["targets"]

    drift = ok(client.get(f"/v1/households/{hh}/drift", headers=ADMIN))
    assert drift["nav"] == pytest.approx(200_000.0)
    assert drift["drift"] == pytest.approx(1.0)  # all cash against a fully invested target
    assert {a["account_id"] for a in drift["accounts"]} == {tax, ira}

    key = {**ADMIN, "Idempotency-Key": _id("k")}
    first = ok(client.post(f"/v1/households/{hh}/rebalance", headers=key))
    assert ok(client.post(f"/v1/households/{hh}/rebalance", headers=key)) == first
    assert first["decision"] == "rebalance"
    recs = {a["account_id"]: a["recommendation_id"] for a in first["accounts"]}
    ira_rec = ok(client.get(f"/v1/recommendations/{recs[ira]}", headers=ADMIN))
    tax_rec = ok(client.get(f"/v1/recommendations/{recs[tax]}", headers=ADMIN))
    ira_buys = {t["instrument"]: t["value"] for t in ira_rec["analysis"]["trades"]}
    tax_buys = {t["instrument"]: t["value"] for t in tax_rec["analysis"]["trades"]}
    assert ira_buys.get(bnd, 0.0) > 90_000  # bonds go to the tax-deferred account
    assert bnd not in tax_buys and tax_buys[eq] > 90_000
    orders = ok(client.post(f"/v1/recommendations/{recs[ira]}/approve", headers=ADMIN))["orders"]
    assert {o["instrument"] for o in orders} <= {eq, bnd} and orders

    again = client.post(f"/v1/households/{hh}/rebalance", headers=ADMIN)
    assert again.status_code == 409, again.text  # rebalances in flight


def test_household_errors_name_the_field(client: TestClient, household: dict[str, Any]) -> None:
    hh = household["id"]
    bad = {"links": [{"from_account": "nope-1", "to_account": household["accounts"]["taxable"]}]}
    resp = client.put(f"/v1/households/{hh}", json=bad, headers=ADMIN)
    assert resp.status_code == 422 and any("links" in f for f in resp.json()["fields"])
    resp = client.put(f"/v1/households/{hh}", json={"targets": {"X": 0.3}}, headers=ADMIN)
    assert resp.status_code == 422 and any("targets" in f for f in resp.json()["fields"])
    assert client.get("/v1/households/nope-1/drift", headers=ADMIN).status_code == 404


def test_stateless_household_analysis(client: TestClient) -> None:
    insts = [
        {"id": "EQ", "price": 100.0, "half_spread_bps": 0.0},
        {"id": "BND", "price": 50.0, "half_spread_bps": 0.0, "asset_class": "fixed_income"},
    ]
    tg = {"EQ": 0.5, "BND": 0.5}
    cov = {"instruments": ["BND", "EQ"], "covariance": [[0.04, 0.0], [0.0, 0.04]]}

    def account(aid: str, kind: str) -> dict[str, Any]:
        return {
            "id": aid,
            "tax_type": kind,
            "request": {
                "as_of": "2024-06-28",
                "portfolio": {"cash": 100_000, "lots": []},
                "targets": tg,
                "instruments": insts,
                "risk_model": cov,
                "policy": {"impact_coefficient": 0.0},
            },
        }

    body = {
        "as_of": "2024-06-28",
        "accounts": [account("T", "taxable"), account("R", "tax_deferred")],
        "targets": tg,
        "risk_model": cov,
        "policy": {"risk_aversion": 1000.0},
    }
    got = ok(client.post("/v1/analyze/household", json=body, headers=ADMIN))
    trades = {
        a["account_id"]: {t["instrument"]: t["quantity"] for t in a["analysis"]["trades"]}
        for a in got["accounts"]
    }
    assert trades == {"T": {"EQ": 1000.0}, "R": {"BND": 2000.0}}
    body["accounts"][1]["request"]["as_of"] = "2024-06-27"
    resp = client.post("/v1/analyze/household", json=body, headers=ADMIN)
    assert resp.status_code == 422
    assert resp.json()["fields"] == ["body.accounts[1].request.as_of"]


def test_household_risk_limits_through_the_api(client: TestClient) -> None:
    insts = [
        {"id": "EQ", "price": 100.0, "half_spread_bps": 1.0, "sector": "s"},
        {"id": "BND", "price": 50.0, "half_spread_bps": 1.0, "asset_class": "fixed_income"},
    ]
    cov = {"instruments": ["BND", "EQ"], "covariance": [[0.01, 0.0], [0.0, 0.04]]}

    def account(aid: str, policy: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": aid,
            "tax_type": "tax_deferred",
            "request": {
                "as_of": "2024-06-28",
                "portfolio": {"cash": 100_000, "lots": []},
                "targets": {"EQ": 1.0},
                "instruments": insts,
                "risk_model": cov,
                "policy": policy,
            },
        }

    # all-equity target, but a VaR limit of 20 % at 95 % allows at most ~61 % equity
    body = {"as_of": "2024-06-28", "accounts": [account("R", {"max_var": 0.2})]}
    got = ok(client.post("/v1/analyze/household", json=body, headers=ADMIN))
    var = [c for c in got["accounts"][0]["analysis"]["constraints"] if c["name"] == "var"]
    assert var and var[0]["value"] <= 0.2 and var[0]["value"] > 0.19  # binds, holds
    body = {
        "as_of": "2024-06-28",
        "accounts": [account("R", {"max_sector_risk_share": {"s": 0.5}})],
    }
    resp = client.post("/v1/analyze/household", json=body, headers=ADMIN)
    assert resp.status_code == 422
    assert resp.json()["fields"] == ["body.accounts[0].request.policy.max_sector_risk_share"]
