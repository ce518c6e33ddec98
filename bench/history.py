"""Synthetic trading history for the benchmarks: every account of a tenant given ``rounds``
earlier rebalances, each with one order per instrument it holds, traded and settled.

A book that has traded for a while holds far more orders, executions and settlements than
the ones in flight; reads that test every fill of the history (instead of the fills in flight)
grow with it. ``bench/trading.py --history-rounds`` measures the handlers on such a book.
One statement of set-based inserts (data-modifying ``WITH``), then ``ANALYZE``.
"""

from __future__ import annotations

import sqlalchemy as sa

_HISTORY = """
WITH h AS (
    SELECT a.id AS account_id, g AS round, gen_random_uuid() AS reb, gen_random_uuid() AS rec
      FROM accounts a CROSS JOIN generate_series(1, :rounds) AS g
     WHERE a.tenant_id = :t
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
              FROM (SELECT DISTINCT account_id, instrument FROM tax_lots) d) l
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
       current_date - round - 1, current_date - round, 'settled'
  FROM o
"""


def add_settled_history(conn: sa.Connection, tenant_id: str, rounds: int) -> int:
    """Give every account of ``tenant_id`` ``rounds`` settled rebalances (an order per held
    instrument each: an acknowledgement, a fill and its settlement); returns the orders added.

    Works on a schema with or without migration 0011's columns (``executions.account_id`` is
    filled when present), so the same history can be measured before and after it.
    """
    if rounds <= 0:
        return 0
    has_account = conn.execute(
        sa.text(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'executions' AND column_name = 'account_id'"
        )
    ).scalar_one()
    sql = _HISTORY.format(
        account_col=", account_id" if has_account else "",
        account_val=", account_id" if has_account else "",
    )
    conn.execute(sa.text(sql), {"t": tenant_id, "rounds": rounds})
    added = conn.execute(
        sa.text("SELECT count(*) FROM orders WHERE tenant_id = :t AND instrument IS NOT NULL"),
        {"t": tenant_id},
    ).scalar_one()
    for table in ("rebalances", "recommendations", "orders", "executions", "settlements"):
        conn.execute(sa.text(f"ANALYZE {table}"))
    return int(added)
