"""The rebalance status and the buy wave read an :class:`OrderTally` counted by PostgreSQL; it
must equal the domain's count over the same orders at every stage of a trade and for the
states a venue and the good-faith guard leave behind (real PostgreSQL)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import InProcessMarket, make_book, make_recommendation

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.rebalancing import order_from_row
from rebalancer.domain.rebalance import OrderTally, RebalanceStatus, status_from_tally
from rebalancer.service_layer.handlers import trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration


def _tallies(engine: Any, tenant: str, rec: uuid.UUID) -> tuple[OrderTally, OrderTally]:
    """(the database's tally, the domain's tally of the same order rows)."""
    with UnitOfWork(engine, tenant) as uow:
        counted = uow.rebalancing.order_tally(rec)
        rows = uow.rebalancing.orders(recommendation_id=rec)
    domain = OrderTally.of([order_from_row(r) for r in rows], [r.requested_quantity for r in rows])
    return counted, domain


def _set(engine: Any, rec: uuid.UUID, instrument: str, **values: Any) -> None:
    t = orm.orders
    with engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.recommendation_id == rec, t.c.instrument == instrument)
            .values(**values)
        )


def test_the_database_tally_equals_the_domain_tally(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="0")
    acct = book.accounts[0]
    rec = make_recommendation(
        engine, book, acct, [(book.a, "sell", 10), (book.b, "sell", 20), (book.c, "buy", 40)]
    )
    assert _tallies(engine, book.tenant, rec) == (OrderTally(), OrderTally())

    market = InProcessMarket(engine, book, SimulatedVenue(seed=3), settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    counted, domain = _tallies(engine, book.tenant, rec)
    assert counted == domain
    # no cash: the buy waits for the sales to settle
    assert (counted.orders, counted.held_buys, counted.first_wave_working) == (3, 1, 2)
    assert not counted.buys_may_go

    market.pump()  # both sales fill; their settlement is withheld
    counted, domain = _tallies(engine, book.tenant, rec)
    assert counted == domain
    assert (counted.first_wave_working, counted.held_buys, counted.filled) == (0, 1, 2)
    assert counted.buys_may_go
    assert status_from_tally(counted) == RebalanceStatus.TRADING  # the buy is still new

    # what a venue and the guard may leave: a cancel after a partial fill, a resized buy
    _set(engine, rec, book.b, status="cancelled", filled_quantity=Decimal(5))
    _set(engine, rec, book.c, status="filled", quantity=Decimal(30), filled_quantity=Decimal(30))
    _set(engine, rec, book.c, requested_quantity=Decimal(40))
    counted, domain = _tallies(engine, book.tenant, rec)
    assert counted == domain
    assert (counted.working, counted.filled, counted.with_fills, counted.resized) == (0, 2, 3, 1)
    assert status_from_tally(counted) == RebalanceStatus.PARTIALLY_COMPLETE

    _set(engine, rec, book.a, status="rejected", filled_quantity=Decimal(0))
    _set(engine, rec, book.b, filled_quantity=Decimal(0))
    _set(engine, rec, book.c, status="expired", filled_quantity=Decimal(0))
    counted, domain = _tallies(engine, book.tenant, rec)
    assert counted == domain
    assert status_from_tally(counted) == RebalanceStatus.FAILED


def test_a_tally_counts_one_tenants_orders(engine: Any) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    rec = make_recommendation(engine, book, book.accounts[0], [(book.a, "sell", 10)])
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    with UnitOfWork(engine, "another-tenant") as uow:
        assert uow.rebalancing.order_tally(rec) == OrderTally()
    with UnitOfWork(engine, book.tenant) as uow:
        assert uow.rebalancing.order_tally(rec).orders == 1
