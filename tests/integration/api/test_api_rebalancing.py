"""Rebalance triggers, recommendations, approvals and orders through the API, with
Idempotency-Key semantics and the audit log."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from apihelpers import ADMIN, READ, make_account, ok, pending_recommendation, unique
from fastapi.testclient import TestClient

from rebalancer.adapters import orm

pytestmark = pytest.mark.integration


def _count(engine: Any, table: sa.Table, **where: Any) -> int:
    q = sa.select(sa.func.count()).select_from(table)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def test_trigger_rebalance_and_read_it(client: TestClient) -> None:
    aid, _, _ = make_account(client)
    body = {"reason": "client asked", "priority": 5}
    accepted = ok(client.post(f"/v1/accounts/{aid}/rebalance", json=body, headers=ADMIN), 202)
    assert accepted["account_id"] == aid and accepted["created"] is True
    rid = accepted["rebalance_id"]
    reb = ok(client.get(f"/v1/rebalances/{rid}", headers=READ))
    assert reb["status"] == "requested" and reb["reasons"] == ["client asked"]
    assert reb["priority"] == 5 and reb["recommendation_id"] is None and reb["orders"] == []
    # a second trigger joins the open rebalance (coalescing), it does not open another
    joined = ok(client.post(f"/v1/accounts/{aid}/rebalance", headers=ADMIN), 202)
    assert joined["rebalance_id"] == rid and joined["created"] is False


def test_same_idempotency_key_gives_same_response_and_no_second_work(
    client: TestClient, engine: Any
) -> None:
    aid, _, _ = make_account(client)
    key = {"Idempotency-Key": unique("key")}
    body = {"reason": "drift", "priority": 1}
    url = f"/v1/accounts/{aid}/rebalance"
    first = ok(client.post(url, json=body, headers={**ADMIN, **key}), 202)
    events = _count(engine, orm.outbox)
    # same body, different key order / whitespace: still the same request
    second = client.post(
        url,
        content=b'{ "priority": 1, "reason": "drift" }',
        headers={**ADMIN, **key, "content-type": "application/json"},
    )
    assert second.status_code == 202 and second.json() == first
    assert _count(engine, orm.rebalances, account_id=aid) == 1
    assert _count(engine, orm.outbox) == events  # nothing published again
    with engine.connect() as conn:
        reasons = conn.execute(
            sa.select(orm.rebalances.c.reasons).where(orm.rebalances.c.account_id == aid)
        ).scalar_one()
    assert reasons == ["drift"]

    other = client.post(url, json={"reason": "other"}, headers={**ADMIN, **key})
    assert other.status_code == 422
    assert other.json()["fields"] == ["header.Idempotency-Key"]
    assert other.json()["error"] == "idempotency_key_reused"


def test_idempotency_keys_are_per_tenant(client: TestClient) -> None:
    from apihelpers import ADMIN_B

    key = {"Idempotency-Key": unique("shared")}
    a_id, _, _ = make_account(client)
    b_id, _, _ = make_account(client, ADMIN_B)
    ra = ok(client.post(f"/v1/accounts/{a_id}/rebalance", headers={**ADMIN, **key}), 202)
    rb = ok(client.post(f"/v1/accounts/{b_id}/rebalance", headers={**ADMIN_B, **key}), 202)
    assert ra["rebalance_id"] != rb["rebalance_id"]


def test_idempotency_key_too_long_is_422(client: TestClient) -> None:
    aid, _, _ = make_account(client)
    resp = client.post(
        f"/v1/accounts/{aid}/rebalance", headers={**ADMIN, "Idempotency-Key": "k" * 300}
    )
    assert resp.status_code == 422 and resp.json()["fields"] == ["header.Idempotency-Key"]


def test_approve_creates_orders_once_and_is_audited(client: TestClient, engine: Any) -> None:
    aid, rid, rec_id = pending_recommendation(client, engine)
    rec = ok(client.get(f"/v1/recommendations/{rec_id}", headers=READ))
    assert rec["status"] == "pending_approval" and rec["account_id"] == aid
    assert len(rec["analysis"]["trades"]) == 2

    key = {"Idempotency-Key": unique("approve")}
    url = f"/v1/recommendations/{rec_id}/approve"
    first = ok(client.post(url, headers={**ADMIN, **key}))
    assert first["recommendation_id"] == rec_id
    assert sorted((o["side"], o["quantity"]) for o in first["orders"]) == [
        ("buy", "5.000000"),
        ("sell", "10.000000"),
    ]
    assert ok(client.post(url, headers={**ADMIN, **key})) == first
    again = ok(client.post(url, headers=ADMIN))  # no key: the handler is idempotent too
    assert {o["id"] for o in again["orders"]} == {o["id"] for o in first["orders"]}
    assert _count(engine, orm.orders, recommendation_id=uuid.UUID(rec_id)) == 2
    assert _count(engine, orm.audit_log, entity="recommendation", entity_id=rec_id) == 1

    rec = ok(client.get(f"/v1/recommendations/{rec_id}", headers=READ))
    assert rec["status"] == "approved" and rec["approved_by"].startswith("api-key:")
    reb = ok(client.get(f"/v1/rebalances/{rid}", headers=READ))
    assert reb["recommendation_id"] == rec_id and len(reb["orders"]) == 2

    by_account = ok(client.get("/v1/orders", params={"account_id": aid}, headers=READ))
    by_rec = ok(client.get("/v1/orders", params={"recommendation_id": rec_id}, headers=READ))
    assert (
        {o["id"] for o in by_account}
        == {o["id"] for o in by_rec}
        == {o["id"] for o in first["orders"]}
    )


def test_cancel_order(client: TestClient, engine: Any) -> None:
    _, _, rec_id = pending_recommendation(client, engine)
    orders = ok(client.post(f"/v1/recommendations/{rec_id}/approve", headers=ADMIN))["orders"]
    oid = orders[0]["id"]
    cancelled = ok(
        client.post(f"/v1/orders/{oid}/cancel", json={"reason": "changed mind"}, headers=ADMIN)
    )
    assert cancelled["status"] in ("cancel_requested", "cancelled")
    assert ok(client.get(f"/v1/orders/{oid}", headers=READ))["status"] == cancelled["status"]
    assert _count(engine, orm.audit_log, entity="order", entity_id=oid) == 1


def test_unknown_ids_are_404_naming_them(client: TestClient) -> None:
    rid = str(uuid.uuid4())
    for resp, field in (
        (client.get(f"/v1/rebalances/{rid}", headers=READ), "rebalance_id"),
        (client.get(f"/v1/recommendations/{rid}", headers=READ), "recommendation_id"),
        (client.post(f"/v1/recommendations/{rid}/approve", headers=ADMIN), "recommendation_id"),
        (client.get(f"/v1/orders/{rid}", headers=READ), "order_id"),
        (client.post(f"/v1/orders/{rid}/cancel", headers=ADMIN), "order_id"),
    ):
        assert resp.status_code == 404, resp.text
        assert rid in resp.json()["detail"] and resp.json()["fields"] == [field]


def test_malformed_uuid_is_422(client: TestClient) -> None:
    resp = client.get("/v1/recommendations/not-a-uuid", headers=READ)
    assert resp.status_code == 422 and resp.json()["fields"] == ["path.recommendation_id"]


def _rebalance_events(engine: Any, rid: str) -> list[dict[str, Any]]:
    """The rebalance's ``status_updated`` payloads in the outbox, oldest first."""
    from rebalancer.contracts import decode

    o = orm.outbox
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(o.c.body).where(o.c.type == "status_updated").order_by(o.c.id)
        ).scalars()
        payloads = [decode(bytes(b)).payload for b in bodies]
    return [p for p in payloads if p["entity"] == "rebalance" and p["entity_id"] == rid]


def test_reject_finishes_the_rebalance_and_a_new_trigger_starts_another(
    client: TestClient, engine: Any
) -> None:
    aid, rid, rec_id = pending_recommendation(client, engine)
    url = f"/v1/recommendations/{rec_id}/reject"
    assert client.post(url, headers=READ).status_code == 403  # approving scope needed
    key = {"Idempotency-Key": unique("reject")}
    body = {"reason": "client is moving the account"}
    first = ok(client.post(url, json=body, headers={**ADMIN, **key}))
    assert first == {"recommendation_id": rec_id, "status": "rejected"}
    assert ok(client.post(url, json=body, headers={**ADMIN, **key})) == first
    assert ok(client.post(url, headers=ADMIN)) == first  # no key: the handler is idempotent
    events = _rebalance_events(engine, rid)
    assert [(e["status"], e["previous"], e["detail"]) for e in events][-1] == (
        "rejected",
        "pending_approval",
        "client is moving the account",
    )
    assert sum(e["status"] == "rejected" for e in events) == 1  # once, retries included
    assert _count(engine, orm.audit_log, entity="recommendation", entity_id=rec_id) == 1
    rec = ok(client.get(f"/v1/recommendations/{rec_id}", headers=READ))
    assert rec["status"] == "rejected" and rec["approved_at"] is None
    assert ok(client.get(f"/v1/rebalances/{rid}", headers=READ))["status"] == "rejected"

    refused = client.post(f"/v1/recommendations/{rec_id}/approve", headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["fields"] == ["recommendation_id"]
    assert _count(engine, orm.orders, recommendation_id=uuid.UUID(rec_id)) == 0
    # finished: the next trigger opens a new rebalance instead of joining the rejected one
    again = ok(client.post(f"/v1/accounts/{aid}/rebalance", headers=ADMIN), 202)
    assert again["created"] is True and again["rebalance_id"] != rid


def test_reject_refuses_an_approved_recommendation_and_hides_other_tenants(
    client: TestClient, engine: Any
) -> None:
    from apihelpers import ADMIN_B

    _, rid, rec_id = pending_recommendation(client, engine)
    assert client.post(f"/v1/recommendations/{rec_id}/reject", headers=ADMIN_B).status_code == 404
    ok(client.post(f"/v1/recommendations/{rec_id}/approve", headers=ADMIN))
    refused = client.post(f"/v1/recommendations/{rec_id}/reject", headers=ADMIN)
    assert refused.status_code == 409 and "cancel the orders" in refused.json()["detail"]
    assert ok(client.get(f"/v1/rebalances/{rid}", headers=READ))["status"] == "trading"
    unknown = client.post(f"/v1/recommendations/{uuid.uuid4()}/reject", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["fields"] == ["recommendation_id"]
    bad = client.post(f"/v1/recommendations/{rec_id}/reject", json={"reason": ""}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["fields"] == ["body.reason"]
