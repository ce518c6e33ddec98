"""One rebalance through the API with the real optimizer: trigger, recommend (what the worker
does), read the recommendation, approve, read the orders."""

from __future__ import annotations

from typing import Any

import pytest
from apihelpers import ADMIN, READ, add_prices, make_account, ok
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def test_trigger_recommend_approve(client: TestClient, runtime: Any) -> None:
    import uuid

    from rebalancer.service_layer.handlers.recommending import recommend
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    aid, _, insts = make_account(client)  # 100 shares of each at 100, 10,000 cash, 10% target
    add_prices(runtime.engine, {insts[0]: 150.0, insts[1]: 60.0}, day=2)
    drift = ok(client.get(f"/v1/accounts/{aid}/drift", headers=READ))
    assert drift["summaries"]

    rid = ok(client.post(f"/v1/accounts/{aid}/rebalance", headers=ADMIN), 202)["rebalance_id"]
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        rec_id = recommend(uow, runtime.optimizer, uuid.UUID(rid))
    assert rec_id is not None
    reb = ok(client.get(f"/v1/rebalances/{rid}", headers=READ))
    assert reb["recommendation_id"] == str(rec_id)
    rec = ok(client.get(f"/v1/recommendations/{rec_id}", headers=READ))
    assert rec["decision"] == "rebalance" and rec["analysis"]["trades"]

    approved = ok(client.post(f"/v1/recommendations/{rec_id}/approve", headers=ADMIN))
    trades = {(t["instrument"], t["side"]) for t in rec["analysis"]["trades"]}
    assert {(o["instrument"], o["side"]) for o in approved["orders"]} == trades
    assert ok(client.get(f"/v1/rebalances/{rid}", headers=READ))["status"] == "trading"
    listed = ok(client.get("/v1/orders", params={"account_id": aid}, headers=READ))
    assert {o["id"] for o in listed} == {o["id"] for o in approved["orders"]}
