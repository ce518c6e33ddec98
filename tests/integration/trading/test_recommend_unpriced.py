"""A rebalance whose request cannot be built (an instrument without a price yet) ends ``failed``
with the reason, instead of its trigger being dead-lettered.

Seen in a chaos run: a trigger handled before the market data of the account's instruments
had been stored was dead-lettered (``invalid: no price for ...``). Real embedded PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import make_book, rows, unique

from rebalancer.adapters import orm
from rebalancer.domain.model import Account, Instrument, Sleeve, TaxLot
from rebalancer.optimizer.engine import Recommender
from rebalancer.service_layer.handlers import portfolio, recommending
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def test_an_unpriced_holding_fails_the_rebalance_with_the_reason(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    fresh = f"NEW{uuid.uuid4().hex[:6].upper()}"  # listed, but no price published yet
    with UnitOfWork(engine, book.tenant) as uow:
        portfolio.upsert_instrument(uow, Instrument(fresh, "equity", "tech", 1))
    (model_id,) = {
        r.model_id
        for r in rows(engine, orm.sleeves, account_id=book.accounts[0])  # the book's model
    }
    acct = unique("acct")
    lot = TaxLot(unique("lot"), fresh, Decimal(10), Decimal(5), date(2023, 3, 1))
    with UnitOfWork(engine, book.tenant) as uow:
        portfolio.create_account(
            uow,
            Account(
                id=acct,
                tenant_id=book.tenant,
                cash=Decimal(1000),
                lots=[lot],
                sleeves=[Sleeve(unique("sl"), model_id, 1.0)],
            ),
        )
    with UnitOfWork(engine, book.tenant) as uow:
        rid, _ = recommending.request_rebalance(uow, acct, ["drift"], 1)
    with UnitOfWork(engine, book.tenant) as uow:
        assert recommending.recommend(uow, Recommender(), rid) is None  # no exception
    (reb,) = rows(engine, orm.rebalances, id=rid)
    assert reb.status == "failed"
    assert rows(engine, orm.recommendations, rebalance_id=rid) == []
    with engine.connect() as conn:
        bodies = [
            json.loads(r.body)["payload"]
            for r in conn.execute(
                sa.select(orm.outbox.c.body).where(orm.outbox.c.type == "status_updated")
            )
        ]
    failed = [b for b in bodies if b["entity_id"] == str(rid) and b["status"] == "failed"]
    assert len(failed) == 1
    assert "no price" in failed[0]["detail"] and fresh in failed[0]["detail"]
    # a later trigger opens a new rebalance (the failed one is not in flight)
    with UnitOfWork(engine, book.tenant) as uow:
        again, new = recommending.request_rebalance(uow, acct, ["drift"], 1)
    assert new and again != rid
