"""A burst of settlements takes one drift snapshot: the confirmation that leaves no fill of the
account awaiting settlement takes it, the ones before it do not; the rebalance stays
``trading`` until that confirmation (real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import held_fills, make_book

from rebalancer.adapters import orm
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _snapshots(engine: Any, account_id: str) -> list[Any]:
    t = orm.drift_snapshots
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t).where(t.c.account_id == account_id)).all())


def _rebalance_status(engine: Any, account_id: str) -> str:
    t = orm.rebalances
    with engine.connect() as conn:
        status = conn.execute(sa.select(t.c.status).where(t.c.account_id == account_id))
        return str(status.scalar_one())


def test_only_the_last_settlement_of_a_burst_snapshots_drift(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    acct = book.accounts[0]
    market = held_fills(engine, book, acct, [(book.a, "sell", 5), (book.b, "sell", 10)])
    first, second = market.held
    with engine.begin() as conn:
        conn.execute(sa.delete(orm.drift_snapshots).where(orm.drift_snapshots.c.account_id == acct))

    assert _rebalance_status(engine, acct) == "trading"  # both orders filled, none settled
    market.confirm(first)  # the other fill still awaits settlement: no snapshot
    assert _snapshots(engine, acct) == []
    assert _rebalance_status(engine, acct) == "trading"

    market.confirm(second)  # the last one: the settled book's snapshot
    (snap,) = _snapshots(engine, acct)
    assert _rebalance_status(engine, acct) == "complete"  # every fill settled
    with UnitOfWork(engine, book.tenant) as uow:
        account = uow.accounts.get(acct)
    held = account.quantities()
    nav = account.cash + sum(q * book.prices[i] for i, q in held.items())
    assert held[book.a] == 95 and held[book.b] == 190  # both sales settled
    assert snap.nav == nav
