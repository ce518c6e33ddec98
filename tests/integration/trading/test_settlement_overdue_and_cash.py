"""Settlements that never arrive raise ``settlement_overdue`` once per fill (sweeper with an
injected clock); unsettled purchases and proceeds are kept current in ``cash_balances`` and
shown by ``GET /v1/accounts/{id}/cash``."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tradehelpers import InProcessMarket, make_book, make_recommendation, positions, rows

from rebalancer.adapters import orm
from rebalancer.entrypoints.sweeper import OrderSweeper
from rebalancer.service_layer.handlers import settling, trading
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.venue import SimulatedVenue

pytestmark = pytest.mark.integration

READ = {"X-API-Key": "test-read-key"}
ADMIN_B = {"X-API-Key": "test-admin-key-b"}

TRADE_DAY = date(2030, 6, 3)
"""A Monday far from the other tests' venue clocks (their fills are never due before ours)."""


def _venue_clock() -> Any:
    ticks = itertools.count()
    start = datetime(TRADE_DAY.year, TRADE_DAY.month, TRADE_DAY.day, 15, tzinfo=UTC)
    return lambda: start + timedelta(seconds=next(ticks))


def _cash(engine: Any, acct: str) -> Any:
    (row,) = rows(engine, orm.cash_balances, account_id=acct)
    return row


def _notional(engine: Any, order_id: Any) -> Decimal:
    fills = [
        e
        for e in rows(engine, orm.executions, order_id=order_id)
        if e.kind in ("fill", "partial_fill")
    ]
    return sum((e.fill_quantity * e.fill_price for e in fills), Decimal(0))


def test_overdue_settlements_alert_once_and_unsettled_cash_is_current(
    client: TestClient, engine: Any
) -> None:
    assert TRADE_DAY.weekday() == 0
    book = make_book(engine, n_accounts=1, cash="100000", tenant="tenant-a")
    acct = book.accounts[0]
    rec = make_recommendation(engine, book, acct, [(book.a, "sell", 40), (book.c, "buy", 100)])
    venue = SimulatedVenue(seed=4, clock=_venue_clock())
    market = InProcessMarket(engine, book, venue, settle=False)
    with UnitOfWork(engine, book.tenant) as uow:
        trading.approve(uow, rec, "t")
    market.pump()
    orders = {o.side: o for o in rows(engine, orm.orders, account_id=acct)}
    assert orders["sell"].status == orders["buy"].status == "filled"
    proceeds, purchases = _notional(engine, orders["sell"].id), _notional(engine, orders["buy"].id)

    # fills traded, nothing settled: the columns say so, and buying power excludes the buys
    cash = _cash(engine, acct)
    assert (cash.settled, cash.unsettled_proceeds, cash.unsettled_purchases) == (
        Decimal(100000),
        proceeds,
        purchases,
    )
    got = client.get(f"/v1/accounts/{acct}/cash", headers=READ)
    assert got.status_code == 200, got.text
    body = {k: Decimal(v) for k, v in got.json().items() if k not in ("account_id", "currency")}
    assert body == {
        "settled": Decimal(100000),
        "unsettled_purchases": purchases,
        "unsettled_proceeds": proceeds,
        "buying_power": Decimal(100000) - purchases,
    }
    assert client.get(f"/v1/accounts/{acct}/cash", headers=ADMIN_B).status_code == 404

    # T+1 is Tuesday; with one business day of grace the fills are overdue from Thursday
    now = {"t": datetime(2030, 6, 5, 18, tzinfo=UTC)}  # Wednesday: within the grace
    sweeper = OrderSweeper(engine, settlement_grace_business_days=1, clock=lambda: now["t"])
    ours = {
        e.report_id for o in orders.values() for e in rows(engine, orm.executions, order_id=o.id)
    }
    assert not ours & set(sweeper.check_settlements())
    now["t"] = datetime(2030, 6, 6, 9, tzinfo=UTC)  # Thursday
    alerted = ours & set(sweeper.check_settlements())
    assert len(alerted) == 2  # one per fill
    assert not ours & set(sweeper.check_settlements())  # never twice
    with UnitOfWork(engine, book.tenant) as uow:
        assert settling.raise_overdue_settlements(uow, date(2030, 7, 1)) == []
    alerts = [a for a in rows(engine, orm.alerts, account_id=acct) if a.kind != "drift"]
    assert sorted(a.key for a in alerts) == sorted(alerted)
    assert {(a.kind, a.severity, a.state) for a in alerts} == {
        ("settlement_overdue", "critical", "raised")
    }
    assert all("expected on 2030-06-04" in a.message for a in alerts)

    # the confirmations finally arrive: alerts clear, proceeds become settled cash
    market.release()
    alerts = [a for a in rows(engine, orm.alerts, account_id=acct) if a.kind != "drift"]
    assert {a.state for a in alerts} == {"cleared"}
    cash = _cash(engine, acct)
    assert cash.unsettled_proceeds == cash.unsettled_purchases == 0
    assert cash.settled == Decimal(100000) + proceeds - purchases
    assert positions(engine, book.tenant, acct)[1] == cash.settled
    (reb,) = rows(engine, orm.rebalances, account_id=acct)
    assert reb.status == "complete"
