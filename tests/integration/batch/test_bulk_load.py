"""The COPY loader writes the whole synthetic book, and set-based reads load it back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from batchhelpers import load_book

from rebalancer.adapters import orm
from rebalancer.service_layer.unit_of_work import UnitOfWork


def test_copy_load_writes_every_row_and_accounts_read_back(runtime: Any) -> None:
    book, stats = load_book(runtime.engine, 25, n_instruments=8)
    assert (stats.accounts, stats.lots, stats.drift_snapshots) == (25, len(book.lots), 25)
    assert stats.prices == 8 * len(book.bar_times)
    ids = [a[0] for a in book.accounts]
    with runtime.engine.connect() as conn:
        n_lots = conn.execute(
            sa.select(sa.func.count()).where(orm.tax_lots.c.account_id.in_(ids))
        ).scalar_one()
        latest = conn.execute(
            sa.select(orm.prices.c.daily_volatility).where(
                orm.prices.c.instrument == book.instruments[0].id,
                orm.prices.c.ts == book.bar_times[-1],
            )
        ).scalar_one()
    assert n_lots == len(book.lots) and latest is not None
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        accounts = uow.accounts.get_many(ids)
        followers = uow.accounts.list_ids(model_id=book.model.id)
        closes = uow.market.closes([i.id for i in book.instruments])
    assert [a.id for a in accounts] == sorted(ids) and sorted(followers) == sorted(ids)
    first = next(a for a in accounts if a.id == ids[0])
    expected = [lot for lot in book.lots if lot[1] == ids[0]]
    assert sum(lot.quantity for lot in first.lots) == sum(Decimal(q[3]) for q in expected)
    assert all(len(c) == len(book.bar_times) for c in closes.values())
