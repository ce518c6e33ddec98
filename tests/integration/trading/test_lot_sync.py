"""``AccountRepository.sync_lots`` writes only the lots that changed (real PostgreSQL): a
settlement touches one or two lots, the others keep their stored rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import make_book, unique

from rebalancer.adapters import orm
from rebalancer.domain.errors import UnknownAccount
from rebalancer.domain.model import TaxLot
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _stored(engine: Any, account_id: str) -> dict[str, tuple[Any, ...]]:
    """Lot id -> (instrument, quantity, cost basis, acquired, ctid): the ctid changes when
    PostgreSQL writes the row."""
    t = orm.tax_lots
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                t.c.lot_id,
                t.c.instrument,
                t.c.quantity,
                t.c.cost_basis,
                t.c.acquired,
                sa.literal_column("ctid::text"),
            ).where(t.c.account_id == account_id)
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_sync_writes_only_changed_lots_and_matches_the_account(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    acct = book.accounts[0]
    extra = unique("lot")
    with UnitOfWork(engine, book.tenant) as uow:  # a third lot, in C
        account = uow.accounts.get(acct, lock=True)
        account.lots.append(TaxLot(extra, book.c, Decimal(30), Decimal(21), date(2023, 5, 1)))
        uow.accounts.sync_lots(account)
        uow.commit()
    before = _stored(engine, acct)
    lot_a, lot_b = book.lots[acct][book.a], book.lots[acct][book.b]
    assert set(before) == {lot_a, lot_b, extra}
    new = unique("lot")
    with UnitOfWork(engine, book.tenant) as uow:
        account = uow.accounts.get(acct, lock=True)
        by_id = {lot.lot_id: lot for lot in account.lots}
        account.lots = [
            replace(by_id[lot_a], quantity=Decimal(40)),  # part sold
            by_id[extra],  # untouched
            TaxLot(new, book.b, Decimal(12), Decimal("49.5"), date(2024, 1, 3)),  # bought
        ]  # lot_b sold out
        account.cash = Decimal("1234.56")
        uow.accounts.sync_lots(account)
        uow.commit()
    after = _stored(engine, acct)
    assert set(after) == {lot_a, extra, new}
    assert after[lot_a][:4] == (book.a, Decimal(40), Decimal(80), date(2022, 1, 3))
    assert after[new][:4] == (book.b, Decimal(12), Decimal("49.5"), date(2024, 1, 3))
    assert after[extra] == before[extra], "an unchanged lot was written"
    assert after[lot_a][4] != before[lot_a][4]
    with UnitOfWork(engine, book.tenant) as uow:
        reloaded = uow.accounts.get(acct)
    assert reloaded.cash == Decimal("1234.56")
    assert sorted((lot.lot_id, lot.quantity) for lot in reloaded.lots) == sorted(
        [(lot_a, Decimal(40)), (extra, Decimal(30)), (new, Decimal(12))]
    )


def test_sync_of_an_account_not_loaded_rewrites_all_its_lots(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    acct = book.accounts[0]
    with UnitOfWork(engine, book.tenant) as uow:
        account = uow.accounts.get(acct)
    lot_a = book.lots[acct][book.a]
    account.lots = [lot for lot in account.lots if lot.lot_id == lot_a]
    with UnitOfWork(engine, book.tenant) as uow:  # another unit of work: nothing remembered
        uow.accounts.sync_lots(account)
        uow.commit()
    assert set(_stored(engine, acct)) == {lot_a}


def test_lock_and_require_check_the_tenant(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    acct = book.accounts[0]
    with UnitOfWork(engine, book.tenant) as uow:
        uow.accounts.lock(acct)
        uow.accounts.require(acct)
    with UnitOfWork(engine, unique("other-tenant")) as uow:
        for check in (uow.accounts.lock, uow.accounts.require):
            with pytest.raises(UnknownAccount):
                check(acct)
