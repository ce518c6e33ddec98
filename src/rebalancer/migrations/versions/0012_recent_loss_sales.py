"""recent loss sales: the trade date on ``realized_gains``, with a partial index of the losses.

A recommendation must not buy back a wash-sale group sold at a loss in the last 30 days, so
the batch reads every chunk's recent loss sales and the single path an account's. The read
joined each realized gain of the accounts to its settlement for the trade date, so its cost
grew with the accounts' history, not with the window: with a year of weekly rebalances
(``bench/batch.py --history-rounds 52 --history-spacing 7``) PostgreSQL spent 8.4 ms of CPU
per account recommended instead of 1.1 (docs/benchmarks.md "batch-history").

``trade_date`` is the trade date of the gain's settlement (always ``<= settle_date``). The
partial index on ``(account_id, trade_date)`` holds the losses only, so the read is one index
range per account, bounded by that account's loss sales in the window.

Upgrade adds the column, fills it from ``settlements`` (one pass over ``realized_gains``),
makes it NOT NULL and builds the index. Downgrade drops both.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

INDEX = "ix_realized_gains_recent_losses"


def upgrade() -> None:
    op.add_column("realized_gains", sa.Column("trade_date", sa.Date()))
    op.execute(
        """
        UPDATE realized_gains g
           SET trade_date = s.trade_date
          FROM settlements s
         WHERE s.id = g.settlement_id
        """
    )
    op.alter_column("realized_gains", "trade_date", nullable=False)
    op.execute(f"CREATE INDEX {INDEX} ON realized_gains (account_id, trade_date) WHERE gain < 0")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_column("realized_gains", "trade_date")
