"""Helpers of the API tests: credentials and small builders through the HTTP API."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient


def unique(prefix: str) -> str:
    """A short unique id such as ``acct-3f2a9c1d``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


ADMIN = {"X-API-Key": "test-admin-key"}
ADMIN_B = {"X-API-Key": "test-admin-key-b"}
READ = {"X-API-Key": "test-read-key"}


def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def make_instruments(client: TestClient, n: int = 2, **attrs: Any) -> list[str]:
    ids = [unique("I").upper() for _ in range(n)]
    for iid in ids:
        ok(client.post("/v1/instruments", json={"id": iid, **attrs}, headers=ADMIN), 201)
    return ids


def make_model(
    client: TestClient,
    instruments: list[str],
    headers: Mapping[str, str] = ADMIN,
    cash_target: float = 0.1,
) -> str:
    mid = unique("m")
    w = (1.0 - cash_target) / len(instruments)
    body = {
        "id": mid,
        "name": "balanced",
        "targets": dict.fromkeys(instruments, w),
        "cash_target": cash_target,
        "bands": {"instrument": 0.02},
    }
    ok(client.post("/v1/models", json=body, headers=headers), 201)
    return mid


def account_body(model_id: str, instruments: list[str], cash: str = "10000") -> dict[str, Any]:
    return {
        "name": "Jane",
        "tax_type": "taxable",
        "cash": cash,
        "lots": [
            {
                "lot_id": unique("lot"),
                "instrument": inst,
                "quantity": "100",
                "cost_basis": "90.5",
                "acquired": "2023-01-15",
            }
            for inst in instruments
        ],
        "sleeves": [{"id": unique("sl"), "model_id": model_id, "share": 1.0}],
    }


def make_account(
    client: TestClient,
    headers: Mapping[str, str] = ADMIN,
    instruments: list[str] | None = None,
) -> tuple[str, str, list[str]]:
    """An account following a new model over new instruments: (account, model, instruments)."""
    insts = instruments or make_instruments(client)
    mid = make_model(client, insts, headers)
    aid = unique("acct")
    body = {"id": aid, **account_body(mid, insts)}
    ok(client.post("/v1/accounts", json=body, headers=headers), 201)
    return aid, mid, insts


def add_prices(engine: Any, prices: Mapping[str, float], day: int = 1) -> None:
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    with UnitOfWork(engine, "tenant-a") as uow:
        uow.market.add_bars(
            datetime(2024, 6, day, 21, tzinfo=UTC),
            [
                {
                    "instrument": i,
                    "close": Decimal(str(p)),
                    "adv_shares": 1e6,
                    "daily_volatility": 0.02,
                    "half_spread_bps": 5.0,
                }
                for i, p in prices.items()
            ],
        )
        uow.commit()


def pending_recommendation(
    client: TestClient, engine: Any, headers: Mapping[str, str] = ADMIN
) -> tuple[str, str, str]:
    """An account with a triggered rebalance and a hand-made pending recommendation (sell 10
    of the first instrument from its lot, buy 5 of the second): (account, rebalance, rec)."""
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    aid, _, (a, b) = make_account(client, headers)
    account = ok(client.get(f"/v1/accounts/{aid}", headers=headers))
    tenant = "tenant-b" if headers.get("X-API-Key") == "test-admin-key-b" else "tenant-a"
    lot_a = next(lot["lot_id"] for lot in account["lots"] if lot["instrument"] == a)
    rid = ok(client.post(f"/v1/accounts/{aid}/rebalance", headers=headers), 202)["rebalance_id"]
    request = {"instruments": [{"id": a, "price": 100.0}, {"id": b, "price": 50.0}]}
    response = {
        "decision": "rebalance",
        "net_benefit": 12.5,
        "trades": [
            {
                "instrument": a,
                "side": "sell",
                "quantity": 10,
                "lots": [{"lot_id": lot_a, "quantity": 10}],
            },
            {"instrument": b, "side": "buy", "quantity": 5, "lots": []},
        ],
    }
    with UnitOfWork(engine, tenant) as uow:
        rec_id = uow.rebalancing.add_recommendation(
            uuid.UUID(rid), aid, "rebalance", "pending_approval", Decimal("12.5"), request, response
        )
        uow.rebalancing.set_rebalance_status(uuid.UUID(rid), "pending_approval")
        uow.commit()
    return aid, rid, str(rec_id)
