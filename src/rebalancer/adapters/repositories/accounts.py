"""Accounts with their sleeves, tax lots and cash (tenant-scoped)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.domain.errors import Conflict, UnknownAccount
from rebalancer.domain.model import Account, Sleeve, TaxLot, TaxType

_LotRow = tuple[str, Decimal, Decimal, date]
"""A stored lot's instrument, quantity, cost basis and acquisition date."""


_LOCK_ORDER_OWNER = (
    sa.select(orm.accounts.c.id)
    .where(
        orm.accounts.c.id
        == sa.select(orm.orders.c.account_id)
        .where(
            orm.orders.c.id == sa.bindparam("order_id"),
            orm.orders.c.tenant_id == sa.bindparam("tid"),
        )
        .scalar_subquery(),
        orm.accounts.c.tenant_id == sa.bindparam("tid"),
    )
    .with_for_update()
)


# Built once with bound parameters: every execution report and settlement locks its account,
# and a settlement loads it (building a statement and its cache key cost about as much client
# CPU as the round trip; docs/execution.md "What trading a batch through costs").
@functools.cache
def _account_row_statement(lock: bool) -> sa.Select[Any]:
    t = orm.accounts
    q = sa.select(t.c.id).where(
        t.c.id == sa.bindparam("account_id"), t.c.tenant_id == sa.bindparam("tid")
    )
    return q.with_for_update() if lock else q


_ACCOUNTS = sa.text(
    """
    SELECT a.id, a.tenant_id, a.household_id, a.name, a.tax_type,
           (SELECT c.settled::text FROM cash_balances c WHERE c.account_id = a.id
             ORDER BY c.currency = a.currency DESC LIMIT 1) AS cash,
           (SELECT coalesce(json_agg(json_build_array(s.id, s.model_id, s.share)
                                     ORDER BY s.id), '[]')
              FROM sleeves s WHERE s.account_id = a.id) AS sleeves,
           (SELECT coalesce(json_agg(json_build_array(l.lot_id, l.instrument, l.quantity::text,
                                                      l.cost_basis::text, l.acquired)
                                     ORDER BY l.acquired, l.lot_id), '[]')
              FROM tax_lots l WHERE l.account_id = a.id) AS lots
      FROM accounts a
     WHERE a.id = ANY(:ids) AND a.tenant_id = :tid
     ORDER BY a.id
    """
)
"""Accounts with their cash (in the account's currency where it has such a row), sleeves and
lots in one statement, id order: the server aggregates sleeves and lots into JSON (one round
trip, no per-lot row handling in Python); cash, quantities and cost bases travel as text and
become ``Decimal`` exactly. Never with ``FOR UPDATE``: a statement that waits for a row lock
still reads its subqueries (cash, lots) from the snapshot it took before waiting, so it would
miss what the lock's holder committed (a lost settlement). Lock first, then load in the next
statement."""


def _account_from_row(r: sa.Row[Any]) -> Account:
    """The :class:`Account` of a row of :data:`_ACCOUNTS`."""
    return Account(
        id=r.id,
        tenant_id=r.tenant_id,
        cash=Decimal(r.cash or 0),
        lots=[
            TaxLot(lot, inst, Decimal(q), Decimal(cb), date.fromisoformat(d))
            for lot, inst, q, cb, d in r.lots
        ],
        sleeves=[Sleeve(sid, mid, float(share)) for sid, mid, share in r.sleeves],
        household_id=r.household_id,
        tax_type=TaxType(r.tax_type),
        name=r.name,
    )


_SET_CASH = (
    sa.update(orm.cash_balances)
    .where(orm.cash_balances.c.account_id == sa.bindparam("b_account_id"))
    .values(settled=sa.bindparam("b_settled", type_=orm.cash_balances.c.settled.type))
)


class AccountRepository:
    """Loads and stores :class:`~rebalancer.domain.model.Account` aggregates.

    The lots of an account loaded with its row lock (``get(..., lock=True)``, the load that
    precedes a change) are remembered as stored, so :meth:`sync_lots` writes only the lots a
    settlement changed (a settlement touches one or two of an account's lots; rewriting all of
    them cost 44 ms per settlement in the demo). Reads of many accounts remember nothing.
    """

    def __init__(self, conn: sa.Connection, tenant_id: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self._stored_lots: dict[str, dict[str, _LotRow]] = {}
        self._locked: set[str] = set()
        """Accounts whose row lock the transaction ``_locked_tx`` took."""
        self._locked_tx: object | None = None

    def exists(self, account_id: str) -> bool:
        return (
            self.conn.execute(
                sa.select(orm.accounts.c.tenant_id).where(orm.accounts.c.id == account_id)
            ).first()
            is not None
        )

    def add(self, account: Account) -> None:
        """Insert a new account with its sleeves, lots and cash."""
        if self.exists(account.id):
            raise Conflict(f"account {account.id!r} already exists; use PUT to replace it", ["id"])
        self._ensure_household(account.household_id)
        self.conn.execute(
            sa.insert(orm.accounts).values(
                id=account.id,
                tenant_id=self.tenant_id,
                household_id=account.household_id,
                name=account.name,
                tax_type=str(account.tax_type),
            )
        )
        self._write_children(account)

    def replace(self, account: Account) -> None:
        """Replace sleeves, lots and cash of an existing account (a full state update)."""
        self.lock(account.id)
        self._ensure_household(account.household_id)
        self.conn.execute(
            sa.update(orm.accounts)
            .where(orm.accounts.c.id == account.id)
            .values(
                household_id=account.household_id,
                name=account.name,
                tax_type=str(account.tax_type),
                version=orm.accounts.c.version + 1,
                updated_at=sa.func.now(),
            )
        )
        # cash_balances is upserted, not deleted: its unsettled columns track in-flight fills
        # and stay true whatever settled cash the caller states
        for table in (orm.sleeves, orm.tax_lots):
            self.conn.execute(sa.delete(table).where(table.c.account_id == account.id))
        self._stored_lots.pop(account.id, None)
        self._write_children(account)

    def _ensure_household(self, household_id: str | None) -> None:
        if household_id is None:
            return
        row = self.conn.execute(
            insert(orm.households)
            .values(id=household_id, tenant_id=self.tenant_id)
            .on_conflict_do_nothing()
            .returning(orm.households.c.id)
        ).first()
        if row is None:
            owner = self.conn.execute(
                sa.select(orm.households.c.tenant_id).where(orm.households.c.id == household_id)
            ).scalar()
            if owner != self.tenant_id:
                raise Conflict(
                    f"household {household_id!r} belongs to another tenant", ["household_id"]
                )

    def _write_children(self, account: Account) -> None:
        if account.sleeves:
            self.conn.execute(
                sa.insert(orm.sleeves),
                [
                    {"id": s.id, "account_id": account.id, "model_id": s.model_id, "share": s.share}
                    for s in account.sleeves
                ],
            )
        self.save_lots(account.id, account.lots)
        self.conn.execute(
            insert(orm.cash_balances)
            .values(account_id=account.id, settled=account.cash)
            .on_conflict_do_update(
                index_elements=["account_id", "currency"], set_={"settled": account.cash}
            )
        )

    def save_lots(self, account_id: str, lots: Iterable[TaxLot]) -> None:
        """Insert ``lots`` (those with shares left) of an account."""
        self._stored_lots.pop(account_id, None)
        rows = [
            {
                "lot_id": lot.lot_id,
                "account_id": account_id,
                "instrument": lot.instrument,
                "quantity": lot.quantity,
                "cost_basis": lot.cost_basis,
                "acquired": lot.acquired,
            }
            for lot in lots
            if lot.quantity > 0
        ]
        if rows:
            self.conn.execute(sa.insert(orm.tax_lots), rows)

    def sync_lots(self, account: Account) -> None:
        """Make stored lots and cash equal to ``account`` (after settlement arithmetic).

        For an account loaded with its lock in this unit of work only the differences are
        written: lots gone (sold out) deleted, changed ones updated, new ones inserted.
        Otherwise all its lots are rewritten.
        """
        stored = self._stored_lots.get(account.id)
        if stored is None:
            self.conn.execute(
                sa.delete(orm.tax_lots).where(orm.tax_lots.c.account_id == account.id)
            )
            self.save_lots(account.id, account.lots)
        else:
            self._write_lot_changes(account, stored)
        self.set_cash(account.id, account.cash)

    def _write_lot_changes(self, account: Account, stored: dict[str, _LotRow]) -> None:
        t = orm.tax_lots
        now = {
            lot.lot_id: (lot.instrument, lot.quantity, lot.cost_basis, lot.acquired)
            for lot in account.lots
            if lot.quantity > 0
        }
        gone = [i for i in stored if i not in now]
        if gone:
            self.conn.execute(
                sa.delete(t).where(t.c.account_id == account.id, t.c.lot_id.in_(gone))
            )
        changed = [
            {
                "b_lot_id": i,
                "instrument": v[0],
                "quantity": v[1],
                "cost_basis": v[2],
                "acquired": v[3],
            }
            for i, v in now.items()
            if i in stored and stored[i] != v
        ]
        if changed:
            self.conn.execute(
                sa.update(t)
                .where(t.c.lot_id == sa.bindparam("b_lot_id"), t.c.account_id == account.id)
                .values(
                    instrument=sa.bindparam("instrument"),
                    quantity=sa.bindparam("quantity"),
                    cost_basis=sa.bindparam("cost_basis"),
                    acquired=sa.bindparam("acquired"),
                ),
                changed,
            )
        new = [
            {
                "lot_id": i,
                "account_id": account.id,
                "instrument": v[0],
                "quantity": v[1],
                "cost_basis": v[2],
                "acquired": v[3],
            }
            for i, v in now.items()
            if i not in stored
        ]
        if new:
            self.conn.execute(sa.insert(t), new)
        self._stored_lots[account.id] = now

    def set_cash(self, account_id: str, settled: Decimal) -> None:
        self.conn.execute(_SET_CASH, {"b_account_id": account_id, "b_settled": settled})

    def get(self, account_id: str, *, lock: bool = False) -> Account:
        """Load one account (its row, cash, sleeves and lots in one statement); ``lock`` first
        takes its row lock, which serializes work on it (not asked for again when this
        transaction holds it).

        Raises
        ------
        UnknownAccount
            No such account for this tenant.
        """
        if lock:
            self.lock(account_id)  # before the load: the load's snapshot sees the last holder
        row = self.conn.execute(_ACCOUNTS, {"ids": [account_id], "tid": self.tenant_id}).first()
        if row is None:
            raise UnknownAccount(f"account {account_id!r} does not exist", ["account_id"])
        account = _account_from_row(row)
        if lock:
            self._stored_lots[account_id] = {
                lot.lot_id: (lot.instrument, lot.quantity, lot.cost_basis, lot.acquired)
                for lot in account.lots
            }
        return account

    def lock(self, account_id: str) -> None:
        """Take the account's row lock (as ``get(..., lock=True)`` does) without loading its
        lots, sleeves and cash: for handlers that only serialize on the account. A lock this
        transaction already took is not asked for again (an execution report locks its
        account, then the rebalance status locks it in the same transaction).

        Raises
        ------
        UnknownAccount
            No such account for this tenant.
        """
        if account_id not in self._locks():
            self._row(account_id, True)

    def lock_owner_of_order(self, order_id: uuid.UUID) -> str | None:
        """Lock the account owning the tenant's order ``order_id`` and return its id (one
        statement: an execution report names its order, not its account); ``None`` when the
        tenant has no such order (a block order's id, or an unknown one). The order's account
        never changes, so reading it from the statement's snapshot is safe."""
        params = {"order_id": order_id, "tid": self.tenant_id}
        account_id = self.conn.execute(_LOCK_ORDER_OWNER, params).scalar()
        if account_id is not None:
            self._locks().add(account_id)
        return account_id

    def _locks(self) -> set[str]:
        """The accounts locked in the connection's current transaction (a commit or rollback
        ends the transaction and its locks, and the next statement begins a new one). Savepoints
        are not tracked: PostgreSQL drops a lock taken inside a savepoint rolled back, so a
        handler that locks accounts must not do so inside one (none does)."""
        tx = self.conn.get_transaction()
        if tx is not self._locked_tx:
            self._locked_tx, self._locked = tx, set()
        return self._locked

    def require(self, account_id: str) -> None:
        """Raise :class:`UnknownAccount` unless this tenant has the account (nothing loaded)."""
        self._row(account_id, False)

    def _row(self, account_id: str, lock: bool) -> sa.Row[Any]:
        """The account's id, locked when ``lock``."""
        params = {"account_id": account_id, "tid": self.tenant_id}
        row = self.conn.execute(_account_row_statement(lock), params).first()
        if lock and row is not None:
            self._locks().add(account_id)
        if row is None:
            raise UnknownAccount(f"account {account_id!r} does not exist", ["account_id"])
        return row

    def get_many(self, account_ids: Iterable[str]) -> list[Account]:
        """Load many accounts (id order; unknown ids are skipped), in one statement."""
        params = {"ids": list(account_ids), "tid": self.tenant_id}
        return [_account_from_row(r) for r in self.conn.execute(_ACCOUNTS, params)]

    def list_ids(
        self, model_id: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[str]:
        q = sa.select(orm.accounts.c.id).where(orm.accounts.c.tenant_id == self.tenant_id)
        if model_id is not None:
            q = q.where(
                orm.accounts.c.id.in_(
                    sa.select(orm.sleeves.c.account_id).where(orm.sleeves.c.model_id == model_id)
                )
            )
        return list(
            self.conn.execute(q.order_by(orm.accounts.c.id).limit(limit).offset(offset)).scalars()
        )

    def holding_instruments(self) -> dict[str, set[str]]:
        """Account id -> instruments held or targeted (for market-data fan-out)."""
        out: dict[str, set[str]] = {}
        rows = self.conn.execute(
            sa.select(orm.tax_lots.c.account_id, orm.tax_lots.c.instrument)
            .join(orm.accounts, orm.accounts.c.id == orm.tax_lots.c.account_id)
            .where(orm.accounts.c.tenant_id == self.tenant_id)
            .distinct()
        )
        for account_id, inst in rows:
            out.setdefault(account_id, set()).add(inst)
        return out
