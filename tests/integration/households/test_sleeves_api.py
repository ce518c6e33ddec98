"""Sleeve API round trips on the real database: the stateless netting analysis (two sleeves
with opposite trades give no trade, only re-attribution), a stored account's sleeve drift and
its sleeve analysis, unified or strategy-level."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_household_api import ADMIN, _id, _prices, ok

pytestmark = pytest.mark.integration


def _stateless_body(mode: str = "unified", **kw: Any) -> dict[str, Any]:
    # 500 X and 500 Y at 100. Sleeve A (half, 100 % X) holds 300 X + 200 Y; sleeve B (half,
    # 100 % Y) holds 200 X + 300 Y: alone, A sells 200 Y for 200 X and B the reverse.
    insts = [
        {"id": i, "price": 100.0, "adv_shares": 1e7, "daily_volatility": 0.02} for i in ("X", "Y")
    ]
    lots = [
        {"lot_id": f"{i}1", "instrument": i, "quantity": 500, "cost_basis": 90.0,
         "acquired": "2023-01-02"}
        for i in ("X", "Y")
    ]  # fmt: skip
    return {
        "account": {
            "as_of": "2024-06-28",
            "portfolio": {"cash": 0.0, "lots": lots},
            "targets": {"X": 0.5, "Y": 0.5},
            "instruments": insts,
            "risk_model": {"instruments": ["X", "Y"], "covariance": [[0.04, 0], [0, 0.04]]},
            "policy": {"risk_aversion": 100.0},
        },
        "sleeves": [
            {"id": "A", "share": 0.5, "targets": {"X": 1.0}, "holdings": {"X": 300, "Y": 200}},
            {"id": "B", "share": 0.5, "targets": {"Y": 1.0}, "holdings": {"X": 200, "Y": 300}},
        ],
        "mode": mode,
        **kw,
    }


def test_opposite_sleeves_give_no_trade_only_reattribution(client: TestClient) -> None:
    got = ok(client.post("/v1/analyze/sleeves", json=_stateless_body(), headers=ADMIN))
    assert got["decision"] == "no_trade" and got["analysis"]["trades"] == []
    moved = {(m["instrument"], m["from_sleeve"], m["to_sleeve"]): m["quantity"]
             for m in got["reattributions"]}  # fmt: skip
    assert moved == pytest.approx({("X", "B", "A"): 200.0, ("Y", "A", "B"): 200.0})
    for s in got["sleeves"]:
        assert s["drift_before"] == pytest.approx(0.2)
        assert s["drift_after"] == pytest.approx(0.0, abs=1e-12)
        assert s["drift_removed_share"] == pytest.approx(0.5)
        assert s["cost_currency"] == 0.0 and s["tax_currency"] == 0.0
    assert got["trades_avoided_value"] == pytest.approx(80_000.0)


def test_stateless_strategy_mode_and_its_errors(client: TestClient) -> None:
    got = ok(
        client.post("/v1/analyze/sleeves", json=_stateless_body("strategy", sleeve_id="A"),
                    headers=ADMIN)
    )  # fmt: skip
    sides = {(t["instrument"], t["side"]) for t in got["analysis"]["trades"]}
    assert sides == {("X", "buy"), ("Y", "sell")}
    by_id = {s["id"]: s for s in got["sleeves"]}
    assert by_id["B"]["holdings_after"] == {"X": 200.0, "Y": 300.0}
    assert by_id["A"]["tax_currency"] > 0  # Y sold at a gain, charged to the sleeve that sold
    resp = client.post("/v1/analyze/sleeves", json=_stateless_body("strategy"), headers=ADMIN)
    assert resp.status_code == 422 and any("sleeve_id" in f for f in resp.json()["fields"])
    bad = _stateless_body()
    bad["sleeves"][0]["holdings"]["X"] = 301
    resp = client.post("/v1/analyze/sleeves", json=bad, headers=ADMIN)
    assert resp.status_code == 422 and any("sleeves" in f for f in resp.json()["fields"])


@pytest.fixture()
def two_sleeves(client: TestClient, engine: Any) -> dict[str, str]:
    """One account, two half sleeves (100 % EQ and 100 % BND), holding 40 % EQ and 60 % BND."""
    eq, bnd = _id("EQ").upper(), _id("BND").upper()
    ok(client.post("/v1/instruments", json={"id": eq}, headers=ADMIN), 201)
    ok(client.post("/v1/instruments", json={"id": bnd, "asset_class": "fixed_income"},
                   headers=ADMIN), 201)  # fmt: skip
    _prices(engine, {eq: 100.0, bnd: 50.0})
    m_eq, m_bnd = _id("m"), _id("m")
    for mid, inst in ((m_eq, eq), (m_bnd, bnd)):
        model = {"id": mid, "targets": {inst: 1.0}, "cash_target": 0.0}
        ok(client.post("/v1/models", json=model, headers=ADMIN), 201)
    aid, sa, sb = _id("acct"), _id("sl"), _id("sl")
    acct = {
        "id": aid,
        "cash": "0",
        "lots": [
            {
                "lot_id": _id("lot"),
                "instrument": eq,
                "quantity": "400",
                "cost_basis": "80",
                "acquired": "2023-01-03",
            },
            {
                "lot_id": _id("lot"),
                "instrument": bnd,
                "quantity": "1200",
                "cost_basis": "45",
                "acquired": "2023-01-03",
            },
        ],
        "sleeves": [
            {"id": sa, "model_id": m_eq, "share": 0.5},
            {"id": sb, "model_id": m_bnd, "share": 0.5},
        ],
    }
    ok(client.post("/v1/accounts", json=acct, headers=ADMIN), 201)
    return {"account": aid, "eq_sleeve": sa, "bnd_sleeve": sb, "eq": eq, "bnd": bnd}


def test_stored_sleeve_drift(client: TestClient, two_sleeves: dict[str, str]) -> None:
    aid = two_sleeves["account"]
    got = ok(client.get(f"/v1/accounts/{aid}/sleeves/drift", headers=ADMIN))
    assert got["nav"] == pytest.approx(100_000.0)
    assert got["attribution"] == "pro_rata_to_targets"
    by_id = {s["id"]: s for s in got["sleeves"]}
    eq_sleeve, bnd_sleeve = by_id[two_sleeves["eq_sleeve"]], by_id[two_sleeves["bnd_sleeve"]]
    assert eq_sleeve["share_drift"] == pytest.approx(-0.1)  # 40 % held vs 50 %
    assert bnd_sleeve["share_drift"] == pytest.approx(0.1)
    assert eq_sleeve["drift"] == pytest.approx(0.05)  # cash 0 of 50 %: half of |0.4 - 0.5|
    assert got["account"]["sum_abs"] == pytest.approx(0.2)
    plain = ok(client.post("/v1/accounts", json={"id": _id("acct"), "cash": "10"},
                           headers=ADMIN), 201)  # fmt: skip
    resp = client.get(f"/v1/accounts/{plain['id']}/sleeves/drift", headers=ADMIN)
    assert resp.status_code == 422 and resp.json()["fields"] == ["account_id"]


def test_stored_sleeves_unified_or_strategy(
    client: TestClient, two_sleeves: dict[str, str]
) -> None:
    aid, eq, bnd = two_sleeves["account"], two_sleeves["eq"], two_sleeves["bnd"]
    url = f"/v1/accounts/{aid}/sleeves/analyze"
    unified = ok(client.post(url, json={"mode": "unified"}, headers=ADMIN))
    sides = {(t["instrument"], t["side"]) for t in unified["analysis"]["trades"]}
    assert sides == {(eq, "buy"), (bnd, "sell")}  # the account moves toward 50 / 50
    by_id = {s["id"]: s for s in unified["sleeves"]}
    assert (
        by_id[two_sleeves["eq_sleeve"]]["drift_after"]
        < by_id[two_sleeves["eq_sleeve"]]["drift_before"]
    )
    assert sum(s["drift_removed_share"] for s in unified["sleeves"]) == pytest.approx(1.0)
    # value moves from the overweight BND sleeve to the underweight EQ sleeve, none is lost
    assert by_id[two_sleeves["eq_sleeve"]]["value_transfer"] > 9_000
    assert sum(s["value_transfer"] for s in unified["sleeves"]) == pytest.approx(0.0, abs=1e-6)
    # strategy level: each sleeve already holds only its model, so neither trades alone
    for sid in (two_sleeves["eq_sleeve"], two_sleeves["bnd_sleeve"]):
        alone = ok(client.post(url, json={"mode": "strategy", "sleeve_id": sid}, headers=ADMIN))
        assert alone["decision"] == "no_trade" and alone["analysis"]["trades"] == []
    resp = client.post(url, json={"mode": "strategy"}, headers=ADMIN)
    assert resp.status_code == 422 and any("sleeve_id" in f for f in resp.json()["fields"])


def test_stored_attribution_opposite_sleeves_net_to_no_trade(
    client: TestClient, engine: Any
) -> None:
    x, y = _id("X").upper(), _id("Y").upper()
    for inst in (x, y):
        ok(client.post("/v1/instruments", json={"id": inst}, headers=ADMIN), 201)
    _prices(engine, {x: 100.0, y: 100.0})
    mx, my = _id("m"), _id("m")
    for mid, inst in ((mx, x), (my, y)):
        model = {"id": mid, "targets": {inst: 1.0}, "cash_target": 0.0}
        ok(client.post("/v1/models", json=model, headers=ADMIN), 201)
    aid, sa, sb = _id("acct"), _id("sl"), _id("sl")
    lots = [
        {"lot_id": _id("lot"), "instrument": i, "quantity": "500", "cost_basis": "90",
         "acquired": "2023-01-03"}
        for i in (x, y)
    ]  # fmt: skip
    sleeves = [{"id": sa, "model_id": mx, "share": 0.5}, {"id": sb, "model_id": my, "share": 0.5}]
    ok(client.post("/v1/accounts", json={"id": aid, "cash": "0", "lots": lots,
                                          "sleeves": sleeves}, headers=ADMIN), 201)  # fmt: skip
    url = f"/v1/accounts/{aid}/sleeves"
    assert ok(client.get(f"{url}/drift", headers=ADMIN))["attribution"] == "pro_rata_to_targets"
    # sleeve A (100 % X) owns 300 X + 200 Y, sleeve B (100 % Y) 200 X + 300 Y
    body = {
        "sleeves": [
            {"id": sa, "holdings": {x: 300, y: 200}},
            {"id": sb, "holdings": {x: 200, y: 300}},
        ]
    }
    drift = ok(client.put(f"{url}/holdings", json=body, headers=ADMIN))
    assert drift["attribution"] == "stored"
    assert [s["drift"] for s in drift["sleeves"]] == pytest.approx([0.2, 0.2])
    got = ok(client.post(f"{url}/analyze", json={"mode": "unified"}, headers=ADMIN))
    assert got["attribution"] == "stored"
    assert got["decision"] == "no_trade" and got["analysis"]["trades"] == []
    moved = {(m["instrument"], m["from_sleeve"], m["to_sleeve"]): m["quantity"]
             for m in got["reattributions"]}  # fmt: skip
    assert moved == pytest.approx({(x, sb, sa): 200.0, (y, sa, sb): 200.0})
    # booking the re-attribution: both sleeves on their models, no drift left
    after = {"sleeves": [{"id": s["id"], "holdings": s["holdings_after"], "cash": s["cash_after"]}
                         for s in got["sleeves"]]}  # fmt: skip
    drift = ok(client.put(f"{url}/holdings", json=after, headers=ADMIN))
    assert [s["drift"] for s in drift["sleeves"]] == pytest.approx([0.0, 0.0], abs=1e-9)
    bad = {"sleeves": [{"id": sa, "holdings": {x: 301}}, {"id": sb, "holdings": {y: 500}}]}
    resp = client.put(f"{url}/holdings", json=bad, headers=ADMIN)
    assert resp.status_code == 422 and resp.json()["fields"] == ["body.sleeves"]
