"""Cancelling a whole block order over HTTP: one cancel to the venue, children follow the state
machine, fills that beat the cancel are still allocated; the block resource; tenant isolation
and Idempotency-Key semantics."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tradehelpers import (
    InProcessMarket,
    make_book,
    make_recommendation,
    positions,
    rows,
    settled_deltas,
    unique,
)

from rebalancer.adapters import orm
from rebalancer.contracts import decode
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.handlers.blocks import cancel_block
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "test-admin-key"}
ADMIN_B = {"X-API-Key": "test-admin-key-b"}
READ = {"X-API-Key": "test-read-key"}


def _cancels(engine: Any, tenant: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(orm.outbox.c.body).where(orm.outbox.c.type == "order_cancel_requested")
        ).scalars()
        envs = [decode(bytes(b)) for b in bodies]
    return [e.payload for e in envs if e.tenant_id == tenant]


def test_cancel_a_block_once_children_follow_and_early_fills_are_allocated(
    client: TestClient, engine: Any
) -> None:
    book = make_book(engine, n_accounts=2, cash="100000", tenant="tenant-a")
    a1, a2 = book.accounts
    recs = [
        make_recommendation(engine, book, a1, [(book.a, "sell", 30), (book.b, "sell", 40)]),
        make_recommendation(engine, book, a2, [(book.a, "sell", 20), (book.b, "sell", 20)]),
    ]
    venue = SimulatedVenue(seed=3, partial_fill_probability=1.0, stall_probability=1.0)
    market = InProcessMarket(engine, book, venue)
    resp = client.post(
        "/v1/approvals", json={"recommendation_ids": [str(r) for r in recs]}, headers=ADMIN
    )
    assert resp.status_code == 200, resp.text
    market.pump(end_of_day=False)  # partial fills, then the remainders rest at the venue
    blocks = {b.instrument: b for b in rows(engine, orm.block_orders, tenant_id="tenant-a")}
    block_a, block_b = blocks[book.a], blocks[book.b]
    assert block_a.status == block_b.status == "partially_filled"

    # a child alone cannot be cancelled: the 409 names the block endpoint (a child whose
    # allocation is already complete answers "already filled" instead, so pick an open one)
    child = next(o for o in rows(engine, orm.orders, block_id=block_a.id) if o.status != "filled")
    r = client.post(f"/v1/orders/{child.id}/cancel", headers=ADMIN)
    assert r.status_code == 409, r.text
    assert f"POST /v1/blocks/{block_a.id}/cancel" in r.json()["detail"]

    # tenant isolation and scope
    for method in ("GET", "POST"):
        suffix = "/cancel" if method == "POST" else ""
        other = client.request(method, f"/v1/blocks/{block_a.id}{suffix}", headers=ADMIN_B)
        assert other.status_code == 404 and other.json()["fields"] == ["block_id"]
    assert client.post(f"/v1/blocks/{block_a.id}/cancel", headers=READ).status_code == 403

    # one cancel per block, whatever the retries
    key = {**ADMIN, "Idempotency-Key": unique("cancel")}
    body = {"reason": "client changed its mind"}
    first = client.post(f"/v1/blocks/{block_a.id}/cancel", json=body, headers=key)
    assert first.status_code == 200, first.text
    assert client.post(f"/v1/blocks/{block_a.id}/cancel", json=body, headers=key).json() == (
        first.json()
    )
    reused = client.post(f"/v1/blocks/{block_a.id}/cancel", json={"reason": "other"}, headers=key)
    assert reused.status_code == 422
    again = client.post(f"/v1/blocks/{block_a.id}/cancel", headers=ADMIN)
    assert again.status_code == 200 and again.json()["status"] == "cancel_requested"
    got = first.json()
    assert got["status"] == "cancel_requested" and got["reason"] == "client changed its mind"
    statuses = {c["status"] for c in got["children"]}  # a child fully allocated stays filled
    assert "cancel_requested" in statuses and statuses <= {"cancel_requested", "filled"}
    assert client.post(f"/v1/blocks/{block_b.id}/cancel", headers=ADMIN).status_code == 200
    # the outbox is shared with other tests of the tenant: look at this test's orders only
    ours = {str(block_a.id), str(block_b.id)} | {
        str(k.id) for b in (block_a, block_b) for k in rows(engine, orm.orders, block_id=b.id)
    }
    sent = [c["order_id"] for c in _cancels(engine, "tenant-a") if c["order_id"] in ours]
    assert sorted(sent) == sorted([str(block_a.id), str(block_b.id)])  # blocks only, once each

    # block B's remainder fills before the venue sees its cancel; block A is cancelled
    market.apply(venue.on_market({book.b: book.prices[book.b]}))
    market.pump()
    a_now, b_now = (rows(engine, orm.block_orders, id=b.id)[0] for b in (block_a, block_b))
    assert a_now.status == "cancelled" and b_now.status == "filled"
    kids_a = rows(engine, orm.orders, block_id=block_a.id)
    kids_b = rows(engine, orm.orders, block_id=block_b.id)
    assert "cancelled" in {k.status for k in kids_a} <= {"cancelled", "filled"}
    assert {k.status for k in kids_b} == {"filled"}  # cancel requested -> filled
    assert sum(k.filled_quantity for k in kids_a) == a_now.filled_quantity > 0
    assert sum(k.filled_quantity for k in kids_b) == b_now.filled_quantity == 60

    view = client.get(f"/v1/blocks/{block_a.id}", headers=READ).json()
    assert view["status"] == "cancelled"
    assert sum(Decimal(c["allocated_quantity"]) for c in view["children"]) == a_now.filled_quantity
    assert {c["account_id"] for c in view["children"]} == {a1, a2}
    assert view["fills"] and all(
        sum(Decimal(x["quantity"]) for x in f["allocations"]) == Decimal(f["quantity"])
        for f in view["fills"]
    )
    assert client.post(f"/v1/blocks/{block_a.id}/cancel", headers=ADMIN).status_code == 409
    missing = client.get(f"/v1/blocks/{uuid.uuid4()}", headers=READ)
    assert missing.status_code == 404
    # the partial fills of the cancelled block settled into the accounts
    stl = rows(engine, orm.settlements, order_id=[k.id for k in kids_a])
    assert sum(s.quantity for s in stl if s.status == "settled") == a_now.filled_quantity
    for reb in rows(engine, orm.rebalances, account_id=[a1, a2]):
        assert reb.status in ("partially_complete", "complete")


def test_order_cancel_honours_the_idempotency_key(client: TestClient, engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000", tenant="tenant-a")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.a, "sell", 10)])
    assert client.post(f"/v1/recommendations/{rec}/approve", headers=ADMIN).status_code == 200
    (order,) = rows(engine, orm.orders, recommendation_id=rec)
    key = {**ADMIN, "Idempotency-Key": unique("cancel")}
    first = client.post(f"/v1/orders/{order.id}/cancel", headers=key)
    assert first.status_code == 200 and first.json()["status"] == "cancel_requested"
    assert client.post(f"/v1/orders/{order.id}/cancel", headers=key).json() == first.json()
    other = client.post(f"/v1/orders/{order.id}/cancel", json={"reason": "x"}, headers=key)
    assert other.status_code == 422  # same key, different request
    assert [c["order_id"] for c in _cancels(engine, "tenant-a")].count(str(order.id)) == 1


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    seed=st.integers(0, 10_000),
    sizes=st.lists(st.integers(2, 40), min_size=2, max_size=3),
    fill_first=st.booleans(),
    duplicates=st.sampled_from([0.0, 0.5]),
)
def test_block_cancel_invariants(
    engine: Any, seed: int, sizes: list[int], fill_first: bool, duplicates: float
) -> None:
    """Whatever the fills before and after the cancel: the children's fills sum to the
    block's (and the venue's), nobody is overfilled, everything ends, every fill settles once
    and positions are initial + settled fills."""

    book = make_book(engine, n_accounts=len(sizes), cash="100000")
    recs = [
        make_recommendation(engine, book, a, [(book.a, "sell", n)])
        for a, n in zip(book.accounts, sizes, strict=True)
    ]
    initial = {a: positions(engine, book.tenant, a) for a in book.accounts}
    venue = SimulatedVenue(
        seed=seed,
        partial_fill_probability=1.0,
        stall_probability=1.0,
        duplicate_probability=duplicates,
        reorder_probability=0.5,
    )
    market = InProcessMarket(engine, book, venue)

    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve_many(uow, recs, "t")
    market.pump(end_of_day=False)
    (block,) = rows(engine, orm.block_orders, tenant_id=book.tenant)
    if block.status not in ("filled", "cancelled", "expired", "rejected"):
        with UnitOfWork(engine, book.tenant) as uow:
            cancel_block(uow, block.id, "t", "property")
    if fill_first:
        market.apply(venue.on_market({book.a: book.prices[book.a]}))
    market.pump()
    (block,) = rows(engine, orm.block_orders, id=block.id)
    kids = rows(engine, orm.orders, block_id=block.id)
    assert block.status in ("filled", "cancelled", "expired")
    assert block.filled_quantity == venue.filled_quantity(str(block.id))
    assert sum(k.filled_quantity for k in kids) == block.filled_quantity
    for k in kids:
        assert 0 <= k.filled_quantity <= k.quantity
        assert k.status in ("filled", "cancelled", "expired"), k
    assert len(_cancels(engine, book.tenant)) <= 1
    for acct in book.accounts:
        shares, cash = positions(engine, book.tenant, acct)
        delta, cash_delta, stl = settled_deltas(engine, acct)
        start, start_cash = initial[acct]
        assert shares.get(book.a, 0) == start[book.a] + delta.get(book.a, 0)
        assert cash == start_cash + cash_delta
        assert len({s.report_id for s in stl}) == len(stl)
