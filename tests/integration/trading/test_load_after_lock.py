"""A load that waits for an account's lock sees what the lock's holder committed (real
PostgreSQL, two transactions).

A statement that waits for a row lock (``SELECT ... FOR UPDATE``) reads its subqueries from
the snapshot it took before waiting: an account's cash and lots aggregated in the locking
statement itself were those from before the holder's commit, and the holder's settlement was
lost when the waiter wrote the account back. Both loaders lock first and read in the next
statement; these tests hold the lock, change cash and a lot, and commit while the loader waits.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import make_book

from rebalancer.adapters.repositories import bulk
from rebalancer.domain.model import Account
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _wait_until_blocked(engine: sa.Engine, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                return
            time.sleep(0.02)
    raise AssertionError("the loader never waited for the account's lock")


def _load_while_locked(
    engine: sa.Engine, tenant: str, account_id: str, load: Callable[[UnitOfWork], Account]
) -> tuple[Account, Decimal, Decimal]:
    """Hold the account's lock, start ``load`` in another transaction, change the account's
    cash and first lot while it waits, commit; returns what ``load`` saw and the new cash and
    lot quantity."""
    seen: dict[str, Any] = {}

    def loader() -> None:
        try:
            with UnitOfWork(engine, tenant) as uow:
                seen["account"] = load(uow)
        except Exception as exc:  # surfaced below
            seen["error"] = exc

    with UnitOfWork(engine, tenant) as holder:
        before = holder.accounts.get(account_id, lock=True)
        worker = threading.Thread(target=loader)
        worker.start()
        _wait_until_blocked(engine)
        cash, lot = before.cash + Decimal("1234.5"), before.lots[0]
        quantity = lot.quantity - 7
        holder.accounts.set_cash(account_id, cash)
        holder.conn.execute(
            sa.text("UPDATE tax_lots SET quantity = :q WHERE account_id = :a AND lot_id = :l"),
            {"q": quantity, "a": account_id, "l": lot.lot_id},
        )
        holder.commit()
    worker.join(timeout=30)
    assert "error" not in seen, seen.get("error")
    return seen["account"], cash, quantity


def test_a_locked_get_sees_the_previous_holders_commit(engine: sa.Engine) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    got, cash, quantity = _load_while_locked(
        engine, book.tenant, acct, lambda uow: uow.accounts.get(acct, lock=True)
    )
    assert got.cash == cash and got.lots[0].quantity == quantity


def test_a_batch_chunk_sees_the_previous_holders_commit(engine: sa.Engine) -> None:
    book = make_book(engine, n_accounts=1, cash="100000")
    acct = book.accounts[0]
    with UnitOfWork(engine, book.tenant) as uow:
        rebalance_id = uow.rebalancing.create_rebalance(acct, "requested", ["test"], 0)
        uow.commit()

    def chunk(uow: UnitOfWork) -> Account:
        (locked,) = bulk.lock_chunk_accounts(uow.conn, book.tenant, [uuid.UUID(str(rebalance_id))])
        return locked.account

    got, cash, quantity = _load_while_locked(engine, book.tenant, acct, chunk)
    assert got.cash == cash and got.lots[0].quantity == quantity
