"""Set-based reads of a chunk answer like the single-purpose repositories."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from batchhelpers import load_book

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.bulk import latest_quotes
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"


def test_latest_quotes_are_the_newest_bar_of_each_instrument(runtime: Any) -> None:
    book, _ = load_book(runtime.engine, 3, n_instruments=5)
    ids = [i.id for i in book.instruments]
    unpriced = f"{book.model.id}-NOPRICE".upper()
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.insert(orm.instruments).values(id=unpriced, asset_class="equity", sector="tech")
        )
    with UnitOfWork(runtime.engine, TENANT) as uow:
        expected = uow.market.latest([*ids, unpriced])
        got = latest_quotes(uow.conn, [*ids, unpriced, ids[0]])
    assert set(got) == set(ids) and unpriced not in got
    assert got == expected
    newest = max(q.ts for q in got.values())
    assert all(q.ts == newest for q in got.values())  # the book's bars end on one day
