"""The status stream (server-sent events from committed outbox rows), and the execution
routes: batch approval with blocks, rebalance status, execution quality, re-optimize."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tradehelpers import InProcessMarket, make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.service_layer.handlers import status_stream
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "test-admin-key"}
ADMIN_B = {"X-API-Key": "test-admin-key-b"}
READ = {"X-API-Key": "test-read-key"}


def _read(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    params.setdefault("idle_timeout_s", 1.0)
    events = []
    headers = {**headers, "Accept": "text/event-stream"}
    with client.stream("GET", "/v1/stream", params=params, headers=headers) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            data = json.loads(fields["data"])
            assert fields["id"] == data["id"] and fields["event"] == "status"
            events.append(data)
    return events


def test_status_stream_follows_a_rebalance_and_resumes(client: TestClient, engine: Any) -> None:
    book = make_book(engine, n_accounts=2, cash="100000", tenant="tenant-a")
    acct1, acct2 = book.accounts
    recs = [make_recommendation(engine, book, a, [(book.a, "sell", 10)]) for a in book.accounts]
    with UnitOfWork(engine, book.tenant) as uow:
        start = status_stream.format_cursor(status_stream.head(uow))
    market = InProcessMarket(engine, book, SimulatedVenue(seed=9, partial_fill_probability=1.0))
    body = {"recommendation_ids": [str(r) for r in recs], "limit_offset_bps": "10"}
    resp = client.post("/v1/approvals", json=body, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    orders = resp.json()["orders"]
    assert {o["order_type"] for v in orders.values() for o in v} == {"limit"}
    (block,) = rows(engine, orm.block_orders, tenant_id="tenant-a", instrument=book.a)
    market.pump()

    events = _read(client, READ, since=start, account_id=acct1)
    assert events and {e["account_id"] for e in events} == {acct1}
    rebalance = [e["status"] for e in events if e["entity"] == "rebalance"]
    assert rebalance == ["trading", "complete"]
    order = [e["status"] for e in events if e["entity"] == "order"]
    assert order[0] == "sent" and order[-1] == "filled"
    assert [e["status"] for e in events if e["entity"] == "settlement"] == ["settled"] * len(
        [e for e in events if e["entity"] == "settlement"]
    )
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)

    # resume after the second event: exactly the rest, with Last-Event-ID or since
    rest = _read(client, {**READ, "Last-Event-ID": ids[1]}, account_id=acct1)
    assert [e["id"] for e in rest] == ids[2:]
    two = _read(client, READ, since=start, account_id=acct1, max_events=2)
    assert [e["id"] for e in two] == ids[:2]
    only = _read(
        client,
        READ,
        since=start,
        entity="rebalance",
        entity_id=str(rows(engine, orm.rebalances, account_id=acct2)[0].id),
    )
    assert [e["status"] for e in only] == ["trading", "complete"]
    # another tenant sees none of it; a stream without a cursor starts now
    assert _read(client, ADMIN_B, since=start, account_id=acct1) == []
    assert _read(client, READ, account_id=acct1, idle_timeout_s=0.5) == []
    bad = client.get(
        "/v1/stream", params={"since": "oops"}, headers={**READ, "Accept": "text/event-stream"}
    )
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    refused = client.get("/v1/stream", headers=READ)  # Accept: */* would wait forever
    assert refused.status_code == 406 and refused.json()["fields"] == ["header.accept"]
    assert "Accept: text/event-stream" in refused.json()["detail"]
    spec = client.get("/openapi.json").json()["paths"]["/v1/stream"]["get"]
    assert list(spec["responses"]["200"]["content"]) == ["text/event-stream"]

    # the rebalance resource, the quality report and a refused re-optimize
    reb_id = rows(engine, orm.rebalances, account_id=acct1)[0].id
    got = client.get(f"/v1/rebalances/{reb_id}", headers=READ).json()
    assert got["status"] == "complete" and got["orders"][0]["status"] == "filled"
    q = client.get("/v1/execution-quality", headers=READ).json()
    (row,) = [r for r in q["by_instrument"] if r["key"] == book.a]
    assert row["orders"] == 2 and row["fill_rate"] == 1.0 and row["filled_orders"] == 2
    assert block.quantity == 20
    r = client.post(f"/v1/rebalances/{reb_id}/reoptimize", headers=ADMIN)
    assert r.status_code == 409 and "partially_complete" in r.json()["detail"]
    assert client.post(f"/v1/rebalances/{reb_id}/reoptimize", headers=READ).status_code == 403
