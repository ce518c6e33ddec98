"""Set-based reads of a chunk answer like the single-purpose repositories."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from batchhelpers import load_book

from rebalancer.adapters import orm
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"


def test_latest_of_named_instruments_is_the_newest_bar_of_each(runtime: Any) -> None:
    """Named instruments are read by one index probe each; the reference is the read of every
    instrument (``DISTINCT ON`` over all bars)."""
    book, _ = load_book(runtime.engine, 3, n_instruments=5)
    ids = [i.id for i in book.instruments]
    unpriced = f"{book.model.id}-NOPRICE".upper()
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.insert(orm.instruments).values(id=unpriced, asset_class="equity", sector="tech")
        )
    with UnitOfWork(runtime.engine, TENANT) as uow:
        every = uow.market.latest()
        got = uow.market.latest([*ids, unpriced, ids[0]])
    assert set(got) == set(ids) and unpriced not in got
    assert got == {i: every[i] for i in ids}
    newest = max(q.ts for q in got.values())
    assert all(q.ts == newest for q in got.values())  # the book's bars end on one day
