"""A sale at a loss, settled through the handler, is a recent loss sale of its account for the
wash-sale window counted from its trade date (not its settlement date); gains, other tenants'
accounts and sales outside the window are not (migration 0012's read)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tradehelpers import InProcessMarket, make_book, make_recommendation, rows

from rebalancer.adapters import orm
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration


def _window(engine: Any, tenant: str, ids: list[str], as_of: Any) -> dict[str, list[Any]]:
    with UnitOfWork(engine, tenant) as uow:
        return uow.tax.recent_loss_sales_many(ids, as_of, 30)


def test_a_settled_loss_sale_opens_its_window_from_the_trade_date(engine: Any) -> None:
    book = make_book(engine, n_accounts=2, cash="100000")
    acct, idle = book.accounts
    # A's lot cost 80 (a gain at 100), B's cost 55 (a loss at 50): sell some of each
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 10), (book.b, "sell", 20)])
    market = InProcessMarket(engine, book, SimulatedVenue(seed=3), SettlementAgent())
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    gains = {g.instrument: g for g in rows(engine, orm.realized_gains, account_id=acct)}
    stl = {s.instrument: s for s in rows(engine, orm.settlements, account_id=acct)}
    assert set(gains) == {book.a, book.b} and gains[book.b].gain < 0 < gains[book.a].gain
    traded = stl[book.b].trade_date
    assert gains[book.b].trade_date == traded and gains[book.a].trade_date == stl[book.a].trade_date
    assert stl[book.b].settle_date > traded  # T+2: the two dates differ

    ids = [acct, idle]
    assert _window(engine, book.tenant, ids, traded) == {acct: [(book.b, traded)]}
    last_day = traded + timedelta(days=30)
    assert _window(engine, book.tenant, ids, last_day) == {acct: [(book.b, traded)]}
    # counted from the trade date: a day later it is out, though settled after the trade
    assert _window(engine, book.tenant, ids, last_day + timedelta(days=1)) == {}
    assert _window(engine, book.tenant, ids, traded - timedelta(days=1)) == {}  # not yet sold
    assert _window(engine, "another-tenant", ids, traded) == {}  # tenant-scoped
