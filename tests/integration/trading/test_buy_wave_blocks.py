"""Buys held back by the good-faith guard (wave 1): released together they trade as blocks;
released by an account's own settlement they go alone (docs/execution.md says why)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import InProcessMarket, make_book, make_recommendation, positions, rows

from rebalancer.adapters import orm
from rebalancer.contracts import decode
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration


def _placed(engine: Any, tenant: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(orm.outbox.c.body).where(orm.outbox.c.type == "order_placed")
        ).scalars()
        envs = [decode(bytes(b)) for b in bodies]
    return [e.payload for e in envs if e.tenant_id == tenant]


def test_held_buys_released_together_trade_as_one_sized_block(engine: Any) -> None:
    book = make_book(engine, n_accounts=3, cash="1000")
    recs = [make_recommendation(engine, book, a, [(book.c, "buy", 100)]) for a in book.accounts]
    market = InProcessMarket(engine, book, SimulatedVenue(seed=6, partial_fill_probability=0.5))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve_many(uow, recs, "t")
    orders = rows(engine, orm.orders, account_id=book.accounts)
    # 100 x 20 = 2000 > 1000 settled: held (wave 1); no sells to wait for: released at once,
    # each sized to 1000 / (20 x 1.005) -> 49 shares, and blocked across the three accounts
    assert {(o.wave, o.requested_quantity, o.quantity) for o in orders} == {(1, 100, 49)}
    assert all(o.reason.startswith("good-faith guard: resized from 100") for o in orders)
    (block,) = rows(engine, orm.block_orders, tenant_id=book.tenant)
    assert {o.block_id for o in orders} == {block.id}
    assert block.side == "buy" and block.quantity == 147
    assert [p["order_id"] for p in _placed(engine, book.tenant)] == [str(block.id)]

    market.pump()
    orders = rows(engine, orm.orders, account_id=book.accounts)
    assert {o.status for o in orders} == {"filled"}
    for acct in book.accounts:
        shares, cash = positions(engine, book.tenant, acct)
        assert shares[book.c] == 49 and cash >= 0  # settled cash only, never overdrawn
    rebs = rows(engine, orm.rebalances, account_id=book.accounts)
    assert {r.status for r in rebs} == {"partially_complete"}  # resized by the guard


def test_buys_released_by_their_own_settlement_go_alone(engine: Any) -> None:
    book = make_book(engine, n_accounts=2, cash="0")
    recs = [
        make_recommendation(engine, book, a, [(book.a, "sell", 30), (book.c, "buy", 100)])
        for a in book.accounts
    ]
    market = InProcessMarket(engine, book, SimulatedVenue(seed=7))
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve_many(uow, recs, "t")
    (sell_block,) = rows(engine, orm.block_orders, tenant_id=book.tenant)
    assert sell_block.side == "sell"
    buys = [o for o in rows(engine, orm.orders, account_id=book.accounts) if o.side == "buy"]
    assert {(o.wave, o.status) for o in buys} == {(1, "new")}  # waiting for settled proceeds

    market.pump()  # sells fill and settle one account at a time; each releases its own buys
    buys = [o for o in rows(engine, orm.orders, account_id=book.accounts) if o.side == "buy"]
    assert {o.status for o in buys} == {"filled"}
    assert all(o.block_id is None for o in buys)
    placed = {p["order_id"] for p in _placed(engine, book.tenant)}
    assert placed == {str(sell_block.id)} | {str(o.id) for o in buys}
    sells = {
        s.account_id: s
        for s in rows(engine, orm.settlements, account_id=book.accounts)
        if s.side == "sell"
    }
    for o in buys:  # each sized to its own account's settled proceeds
        assert (
            o.quantity * Decimal("20.1") <= sells[o.account_id].quantity * sells[o.account_id].price
        )
