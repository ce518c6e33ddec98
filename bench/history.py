"""Synthetic trading history for the benchmarks: every account of a tenant given ``rounds``
earlier rebalances, each with one order per instrument it holds, traded and settled.

A book that has traded for a while holds far more orders, executions and settlements than
the ones in flight; reads that test every fill of the history (instead of the fills in flight)
grow with it. ``bench/trading.py --history-rounds`` measures the handlers on such a book.
Every history sale also realizes a gain, a loss for about half of them (``realized_gains``,
which the batch reads for its wash-sale window): ``bench/batch.py --history-rounds`` measures
the batch on such a book. Dates count back from ``as_of``. One statement of
set-based inserts (data-modifying ``WITH``), one for the realized gains, then ``ANALYZE``.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

_HISTORY = """
WITH h AS (
    SELECT a.id AS account_id, g AS round, gen_random_uuid() AS reb, gen_random_uuid() AS rec
      FROM accounts a CROSS JOIN generate_series(1, :rounds) AS g
     WHERE a.tenant_id = :t AND a.id LIKE :accounts
), r AS (
    INSERT INTO rebalances (id, tenant_id, account_id, status, reasons)
    SELECT reb, :t, account_id, 'complete', '["history"]' FROM h
), rc AS (
    INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, decision, status,
                                 request, response)
    SELECT rec, reb, :t, account_id, 'rebalance', 'approved', '{{}}', '{{}}' FROM h
), o AS (
    SELECT gen_random_uuid() AS id, h.rec, h.account_id, h.round, l.instrument,
           CASE WHEN (h.round + l.k) % 2 = 0 THEN 'buy' ELSE 'sell' END AS side
      FROM h
      JOIN (SELECT account_id, instrument,
                   row_number() OVER (PARTITION BY account_id ORDER BY instrument) AS k
              FROM (SELECT DISTINCT account_id, instrument FROM tax_lots
                     WHERE account_id LIKE :accounts) d) l
        ON l.account_id = h.account_id
), oi AS (
    INSERT INTO orders (id, recommendation_id, tenant_id, account_id, instrument, side,
                        quantity, filled_quantity, status)
    SELECT id, rec, :t, account_id, instrument, side, 1, 1, 'filled' FROM o
), ei AS (
    INSERT INTO executions (report_id, order_id, tenant_id, kind, fill_quantity, fill_price,
                            cumulative_quantity, sequence, outcome, venue_time{account_col})
    SELECT 'h-ack-' || id, id, :t, 'acknowledged', 0, NULL, 0, 1, 'applied',
           now() - make_interval(days => round + 1){account_val} FROM o
    UNION ALL
    SELECT 'h-fill-' || id, id, :t, 'fill', 1, 10, 1, 2, 'applied',
           now() - make_interval(days => round + 1){account_val} FROM o
)
INSERT INTO settlements (id, report_id, order_id, tenant_id, account_id, instrument, side,
                         quantity, price, trade_date, settle_date, status)
SELECT 'h-set-' || id, 'h-fill-' || id, id, :t, account_id, instrument, side, 1, 10,
       CAST(:as_of AS date) - round * :spacing - 1, CAST(:as_of AS date) - round * :spacing,
       'settled'
  FROM o
"""

_GAINS = """
INSERT INTO realized_gains (settlement_id, account_id, lot_id, instrument, quantity, proceeds,
                            cost, gain, term, settle_date{trade_col})
SELECT id, account_id, 'h-lot-' || order_id, instrument, 1, 10, 10 + g, -g, 'short_term',
       settle_date{trade_col}
  FROM (SELECT s.*, CASE WHEN hashtext(s.id) % 2 = 0 THEN 2 ELSE -2 END AS g
          FROM settlements s
         WHERE s.tenant_id = :t AND s.side = 'sell' AND s.id LIKE 'h-set-%'
           AND s.account_id LIKE :accounts) x
"""


def add_settled_history(
    conn: sa.Connection,
    tenant_id: str,
    rounds: int,
    as_of: date | None = None,
    accounts_like: str = "%",
    spacing_days: int = 1,
) -> int:
    """Give every account of ``tenant_id`` ``rounds`` settled rebalances (an order per held
    instrument each: an acknowledgement, a fill and its settlement; each sale's realized gain,
    a loss for about half of them); returns the orders added. Round ``k`` traded
    ``k * spacing_days + 1`` days before ``as_of`` (default today) and settled a day later.
    ``accounts_like`` (a SQL ``LIKE`` pattern of account ids) limits the history to some of
    the tenant's accounts.

    Works on a schema with or without the columns of migrations 0011 and 0012
    (``executions.account_id``, ``realized_gains.trade_date``: filled when present), so the
    same history can be measured before and after them.
    """
    if rounds <= 0:
        return 0
    has_account = _has_column(conn, "executions", "account_id")
    has_trade_date = _has_column(conn, "realized_gains", "trade_date")
    sql = _HISTORY.format(
        account_col=", account_id" if has_account else "",
        account_val=", account_id" if has_account else "",
    )
    before = _orders(conn, tenant_id)
    params = {"t": tenant_id, "accounts": accounts_like}
    conn.execute(
        sa.text(sql),
        {**params, "rounds": rounds, "as_of": as_of or date.today(), "spacing": spacing_days},
    )
    gains = _GAINS.format(trade_col=", trade_date" if has_trade_date else "")
    conn.execute(sa.text(gains), params)
    added = _orders(conn, tenant_id) - before
    tables = ("rebalances", "recommendations", "orders", "executions", "settlements")
    for table in (*tables, "realized_gains"):
        conn.execute(sa.text(f"ANALYZE {table}"))
    return added


def _has_column(conn: sa.Connection, table: str, column: str) -> bool:
    q = (
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = :table AND column_name = :column"
    )
    return bool(conn.execute(sa.text(q), {"table": table, "column": column}).scalar_one())


def _orders(conn: sa.Connection, tenant_id: str) -> int:
    q = "SELECT count(*) FROM orders WHERE tenant_id = :t AND instrument IS NOT NULL"
    return int(conn.execute(sa.text(q), {"t": tenant_id}).scalar_one())
