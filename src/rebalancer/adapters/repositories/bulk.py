"""Bulk data paths: ``COPY`` for loading books, multi-row statements for batch writes.

Loading 10,000 accounts with their lots, prices and drift snapshots row by row takes minutes;
PostgreSQL's ``COPY ... FROM STDIN`` (psycopg 3 ``cursor.copy``) streams them in seconds. The
copy runs on the caller's connection, inside its transaction: a failed load leaves nothing.

A chunk of batch work reads its accounts with one statement (:func:`lock_chunk_accounts`: row
locks, cash, sleeves and lots aggregated per account by the server) and the latest quotes with
one index probe per instrument (``MarketDataRepository.latest``); it writes its statuses with one
``UPDATE``, outbox events and processed-event marks with multi-row inserts (recommendations:
:mod:`rebalancer.adapters.repositories.batch_results`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from rebalancer.adapters import orm
from rebalancer.adapters.repositories.accounts import AccountRepository
from rebalancer.contracts import TOPICS, Envelope, encode
from rebalancer.domain.errors import Conflict
from rebalancer.domain.model import Account
from rebalancer.scaled_book import ScaledBook


def copy_rows(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """``COPY table (columns) FROM STDIN`` on ``conn``'s transaction; returns the row count.

    Values are adapted by psycopg (dicts must be passed already JSON-encoded for ``jsonb``).
    """
    raw = conn.connection.driver_connection
    assert raw is not None, "COPY needs a psycopg connection"
    cols = ", ".join(f'"{c}"' for c in columns)
    n = 0
    sql = f'COPY "{table.name}" ({cols}) FROM STDIN'
    with raw.cursor() as cur, cur.copy(sql) as cp:  # type: ignore[attr-defined]
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


@dataclass(frozen=True)
class LoadStats:
    """What :func:`load_scaled_book` wrote and how long it took (seconds)."""

    accounts: int
    lots: int
    prices: int
    drift_snapshots: int
    seconds: float

    @property
    def rows(self) -> int:
        """Rows written by COPY (accounts, cash, sleeves, lots, prices, drift snapshots)."""
        return 3 * self.accounts + self.lots + self.prices + self.drift_snapshots


def load_scaled_book(conn: sa.Connection, book: ScaledBook) -> LoadStats:
    """Write ``book`` (tenant, instruments, model, accounts, lots, cash, prices, drift) with COPY.

    Raises
    ------
    Conflict
        When the book's model already exists (choose another ``prefix``).
    """
    start = time.perf_counter()
    conn.execute(
        insert(orm.tenants).values(id=book.tenant_id, name=book.tenant_id).on_conflict_do_nothing()
    )
    if conn.execute(sa.select(orm.models.c.id).where(orm.models.c.id == book.model.id)).first():
        raise Conflict(
            f"model {book.model.id!r} already exists; load the book with another prefix",
            ["prefix"],
        )
    conn.execute(
        insert(orm.instruments)
        .values(
            [
                {
                    "id": i.id,
                    "name": i.id,
                    "asset_class": i.asset_class,
                    "sector": i.sector,
                    "lot_size": i.lot_size,
                    "settlement_days": i.settlement_days,
                }
                for i in book.instruments
            ]
        )
        .on_conflict_do_nothing()
    )
    m = book.model
    conn.execute(
        sa.insert(orm.models).values(
            id=m.id, tenant_id=book.tenant_id, name=m.name, current_version=m.version
        )
    )
    conn.execute(
        sa.insert(orm.model_versions).values(
            model_id=m.id, version=m.version, targets=dict(m.targets), cash_target=m.cash_target
        )
    )
    copy_rows(
        conn,
        orm.accounts,
        ["id", "tenant_id", "name", "tax_type"],
        ((a, book.tenant_id, name, tax) for a, name, tax in book.accounts),
    )
    copy_rows(conn, orm.cash_balances, ["account_id", "settled"], book.cash)
    copy_rows(conn, orm.sleeves, ["id", "account_id", "model_id", "share"], book.sleeves)
    lots = copy_rows(
        conn,
        orm.tax_lots,
        ["lot_id", "account_id", "instrument", "quantity", "cost_basis", "acquired"],
        book.lots,
    )
    prices = copy_rows(
        conn,
        orm.prices,
        ["instrument", "ts", "close", "adv_shares", "daily_volatility", "half_spread_bps"],
        book.price_rows(),
    )
    drift = copy_rows(
        conn,
        orm.drift_snapshots,
        [
            "account_id",
            "ts",
            "tenant_id",
            "nav",
            "total_abs_drift",
            "max_abs_drift",
            "tracking_error",
            "details",
        ],
        ((*r[:-1], json.dumps(r[-1])) for r in book.drift),
    )
    return LoadStats(len(book.accounts), lots, prices, drift, time.perf_counter() - start)


@dataclass(frozen=True)
class ChunkAccount:
    """A locked rebalance of a chunk and its account (state as of the lock)."""

    rebalance_id: uuid.UUID
    status: str
    batch_id: uuid.UUID | None
    account: Account


_LOCK_CHUNK = sa.text(
    """
    SELECT r.id, r.status, r.batch_id, a.id AS account_id
      FROM rebalances r JOIN accounts a ON a.id = r.account_id
     WHERE r.id = ANY(:ids) AND r.tenant_id = :tenant AND a.tenant_id = :tenant
     ORDER BY a.id, r.id
       FOR UPDATE OF a, r
    """
)


def lock_chunk_accounts(
    conn: sa.Connection, tenant_id: str, rebalance_ids: Sequence[uuid.UUID]
) -> list[ChunkAccount]:
    """Lock the rebalances and their accounts (account id order), then load the accounts.

    Two statements for the whole chunk: the locks, then one read of the accounts
    (:meth:`AccountRepository.get_many`). The read comes after the locks on purpose: a
    statement that waits for a row lock reads its subqueries from the snapshot it took before
    waiting, so a settlement committed by the lock's holder meanwhile would be missed.
    """
    if not rebalance_ids:
        return []
    params = {"ids": list(rebalance_ids), "tenant": tenant_id}
    locked = conn.execute(_LOCK_CHUNK, params).all()
    loaded = AccountRepository(conn, tenant_id).get_many(sorted({r.account_id for r in locked}))
    accounts = {a.id: a for a in loaded}
    return [ChunkAccount(r.id, r.status, r.batch_id, accounts[r.account_id]) for r in locked]


def add_outbox_many(conn: sa.Connection, events: Iterable[tuple[Envelope, str | None]]) -> int:
    """Queue many ``(envelope, topic or None)`` events with one ``COPY`` (a fan-out of 10,000
    accounts queues 20,000); ``id``, ``created_at`` and ``txid`` take their defaults."""
    return copy_rows(
        conn,
        orm.outbox,
        ("event_id", "topic", "key", "type", "body"),
        (
            (e.event_id, topic or TOPICS[e.type], e.key, str(e.type), encode(e))
            for e, topic in events
        ),
    )


def first_time_many(
    conn: sa.Connection, consumer: str, event_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Record ``event_ids`` for ``consumer``; returns those not processed before.

    Ids are inserted in sorted order, so two workers holding overlapping chunks (a redelivery)
    wait for each other instead of deadlocking; the later one finds the ids recorded.
    """
    if not event_ids:
        return set()
    t = orm.processed_events
    stmt = (
        insert(t)
        .values([{"consumer": consumer, "event_id": e} for e in sorted(set(event_ids))])
        .on_conflict_do_nothing()
        .returning(t.c.event_id)
    )
    return set(conn.execute(stmt).scalars())


def set_rebalance_statuses(conn: sa.Connection, statuses: Mapping[uuid.UUID, str]) -> None:
    """Set the status of many rebalances with one ``UPDATE ... FROM unnest(...)``."""
    if not statuses:
        return
    conn.execute(
        sa.text(
            "UPDATE rebalances SET status = v.status, updated_at = now() "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[])) AS v(id, status) "
            "WHERE rebalances.id = v.id"
        ),
        {"ids": list(statuses), "statuses": list(statuses.values())},
    )
