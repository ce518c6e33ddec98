"""Accounts through the API: CRUD with lots and cash, paging, drift, alerts and triggers."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from apihelpers import (
    ADMIN,
    READ,
    account_body,
    add_prices,
    make_account,
    make_instruments,
    make_model,
    ok,
    unique,
)
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def test_account_crud(client: TestClient) -> None:
    insts = make_instruments(client)
    mid = make_model(client, insts)
    aid = unique("acct")
    body = {"id": aid, "household_id": unique("hh"), **account_body(mid, insts, cash="1234.56")}
    created = ok(client.post("/v1/accounts", json=body, headers=ADMIN), 201)
    assert Decimal(created["cash"]) == Decimal("1234.56")
    assert created["household_id"] == body["household_id"]
    assert {lot["instrument"] for lot in created["lots"]} == set(insts)
    assert Decimal(created["lots"][0]["quantity"]) == 100
    assert created["sleeves"][0]["model_id"] == mid

    got = ok(client.get(f"/v1/accounts/{aid}", headers=READ))
    assert got == created

    new = account_body(mid, insts[:1], cash="50")
    new["tax_type"] = "tax_deferred"
    replaced = ok(client.put(f"/v1/accounts/{aid}", json=new, headers=ADMIN))
    assert Decimal(replaced["cash"]) == 50 and replaced["tax_type"] == "tax_deferred"
    assert [lot["instrument"] for lot in replaced["lots"]] == insts[:1]

    dup = client.post("/v1/accounts", json=body, headers=ADMIN)
    assert dup.status_code == 409 and aid in dup.json()["detail"]


def test_admin_actions_are_audited(client: TestClient, engine: Any) -> None:
    import sqlalchemy as sa

    from rebalancer.adapters import orm

    aid, mid, insts = make_account(client)
    ok(client.put(f"/v1/accounts/{aid}", json=account_body(mid, insts), headers=ADMIN))
    t = orm.audit_log
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.actor, t.c.action, t.c.entity_id, t.c.tenant_id)
            .where(t.c.entity_id.in_([aid, mid, *insts]))
            .order_by(t.c.id)
        ).all()
    actions = [(r.action, r.entity_id) for r in rows]
    assert actions == [
        ("upsert", insts[0]),
        ("upsert", insts[1]),
        ("create", mid),
        ("create", aid),
        ("replace", aid),
    ]
    assert {r.tenant_id for r in rows} == {"tenant-a"}
    assert all(r.actor.startswith("api-key:") and "test-admin-key" not in r.actor for r in rows)


def test_accounts_are_paged(client: TestClient) -> None:
    insts = make_instruments(client, 1)
    mid = make_model(client, insts)
    ids = sorted(unique("pg") for _ in range(3))
    for aid in ids:
        ok(
            client.post(
                "/v1/accounts", json={"id": aid, **account_body(mid, insts)}, headers=ADMIN
            ),
            201,
        )
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = ok(
            client.get(
                "/v1/accounts", params={"model_id": mid, "limit": 2, "offset": offset}, headers=READ
            )
        )
        seen += [a["id"] for a in page["items"]]
        offset = page["next_offset"]
    assert seen == ids
    bad = client.get("/v1/accounts", params={"limit": 0}, headers=READ)
    assert bad.status_code == 422 and bad.json()["fields"] == ["query.limit"]


def test_unknown_account_is_404_naming_it(client: TestClient) -> None:
    for resp in (
        client.get("/v1/accounts/nope-acct", headers=READ),
        client.put("/v1/accounts/nope-acct", json={}, headers=ADMIN),
        client.get("/v1/accounts/nope-acct/drift", headers=READ),
        client.get("/v1/accounts/nope-acct/alerts", headers=READ),
        client.get("/v1/accounts/nope-acct/triggers", headers=READ),
        client.post("/v1/accounts/nope-acct/rebalance", headers=ADMIN),
        client.get("/v1/orders", params={"account_id": "nope-acct"}, headers=READ),
    ):
        assert resp.status_code == 404, resp.text
        body = resp.json()
        assert body["error"] == "unknown_account" and "nope-acct" in body["detail"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"cash": "-1"}, 422, "body.cash"),
        ({"cash": "1.1234567"}, 422, "body.cash"),
        ({"tax_type": "offshore"}, 422, "body.tax_type"),
        (
            {
                "lots": [
                    {
                        "lot_id": "x",
                        "instrument": "NOPE-9",
                        "quantity": "1",
                        "cost_basis": "1",
                        "acquired": "2024-01-01",
                    }
                ]
            },
            404,
            "body.lots",
        ),
        (
            {
                "lots": [
                    {
                        "lot_id": "x",
                        "instrument": "I",
                        "quantity": "0",
                        "cost_basis": "1",
                        "acquired": "2024-01-01",
                    }
                ]
            },
            422,
            "body.lots.0.quantity",
        ),
        ({"sleeves": [{"id": "s", "model_id": "M", "share": 0.5}]}, 422, "body.sleeves"),
        ({"sleeves": [{"id": "s", "model_id": "nope-model", "share": 1}]}, 404, "body.model_id"),
        ({"unexpected": 1}, 422, "body.unexpected"),
    ],
)
def test_bad_account_is_rejected_naming_the_field(
    client: TestClient, change: dict[str, Any], status: int, field: str
) -> None:
    insts = make_instruments(client, 1)
    mid = make_model(client, insts)
    body = {"id": unique("bad"), **account_body(mid, insts), **change}
    for lot in body["lots"]:
        lot["instrument"] = insts[0] if lot["instrument"] == "I" else lot["instrument"]
    for sleeve in body["sleeves"]:
        sleeve["model_id"] = mid if sleeve["model_id"] == "M" else sleeve["model_id"]
    resp = client.post("/v1/accounts", json=body, headers=ADMIN)
    assert resp.status_code == status, resp.text
    assert field in resp.json()["fields"]
    assert client.get(f"/v1/accounts/{body['id']}", headers=READ).status_code == 404


def test_drift(client: TestClient, engine: Any) -> None:
    aid, _, insts = make_account(client)
    add_prices(engine, dict.fromkeys(insts, 100.0))
    drift = ok(client.get(f"/v1/accounts/{aid}/drift", headers=READ))
    assert drift["account_id"] == aid
    assert drift["nav"] == pytest.approx(10_000 + 2 * 100 * 100)
    assert "instrument" in drift["levels"]


def test_drift_without_prices_is_422(client: TestClient) -> None:
    aid, _, _ = make_account(client)
    resp = client.get(f"/v1/accounts/{aid}/drift", headers=READ)
    assert resp.status_code == 422 and "no price" in resp.json()["detail"]


def test_alerts_and_triggers(client: TestClient, engine: Any) -> None:
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    aid, _, insts = make_account(client)
    assert ok(client.get(f"/v1/accounts/{aid}/alerts", headers=READ)) == []
    assert ok(client.get(f"/v1/accounts/{aid}/triggers", headers=READ)) == []
    with UnitOfWork(engine, "tenant-a") as uow:
        alert_id = uow.rebalancing.raise_alert(
            {
                "account_id": aid,
                "kind": "drift",
                "level": "instrument",
                "key": insts[0],
                "severity": "warning",
                "state": "raised",
                "value": 0.04,
                "band": 0.02,
                "message": "over band",
            }
        )
        uow.rebalancing.add_trigger_evaluations(
            [
                {
                    "account_id": aid,
                    "kind": "threshold",
                    "fired": False,
                    "reason": "max drift 0.01 within band 0.02",
                    "inputs": {"max_abs": 0.01},
                }
            ]
        )
        uow.commit()
    alerts = ok(client.get(f"/v1/accounts/{aid}/alerts", headers=READ))
    assert [a["id"] for a in alerts] == [str(alert_id)] and alerts[0]["acknowledged_at"] is None
    acked = ok(client.post(f"/v1/accounts/{aid}/alerts/{alert_id}/acknowledge", headers=ADMIN))
    assert acked["acknowledged_at"] is not None and acked["acknowledged_by"].startswith("api-key")
    triggers = ok(client.get(f"/v1/accounts/{aid}/triggers", headers=READ))
    assert triggers[0]["kind"] == "threshold" and triggers[0]["fired"] is False
    missing = client.post(f"/v1/accounts/{aid}/alerts/{uuid.uuid4()}/acknowledge", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["fields"] == ["alert_id"]


def test_replacing_an_account_keeps_unsettled_cash(client: TestClient, engine: Any) -> None:
    """A PUT states settled cash; fills still in flight (unsettled columns) stay as they were."""
    import sqlalchemy as sa

    from rebalancer.adapters import orm

    aid, mid, insts = make_account(client)
    t = orm.cash_balances
    with engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.account_id == aid)
            .values(unsettled_purchases=Decimal("300"), unsettled_proceeds=Decimal("120"))
        )
    ok(client.put(f"/v1/accounts/{aid}", json=account_body(mid, insts, cash="1000"), headers=ADMIN))
    cash = ok(client.get(f"/v1/accounts/{aid}/cash", headers=READ))
    assert Decimal(cash["settled"]) == 1000
    assert Decimal(cash["unsettled_purchases"]) == 300
    assert Decimal(cash["unsettled_proceeds"]) == 120
    assert Decimal(cash["buying_power"]) == 700
