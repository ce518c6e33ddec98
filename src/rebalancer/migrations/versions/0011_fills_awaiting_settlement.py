"""fills awaiting settlement: a flag and the account on ``executions``, with a partial index.

Three reads find the fills that have no settlement outcome yet: the unsettled-cash totals of
an account (after every fill and settlement), the unsettled counts of a recommendation (the
rebalance status and the buy wave, after every report and settlement) and the overdue sweep.
Each tested every counted fill against ``settlements`` with ``NOT EXISTS``: the totals walked
the account's whole order history, and while the table's statistics lagged a burst of
settlements PostgreSQL planned the test as a scan of every settlement (about 1,045 such
statements in a 32-account benchmark trade-through). Their cost grew with the book's history.

``awaiting_settlement`` is true on a counted fill (kind ``fill`` or ``partial_fill``, outcome
``applied`` or ``ignored_late``) of an account's order until its settlement (settled or
failed) is recorded; ``account_id`` is the account of the report's order (NULL for a block's
own reports and for reports of unknown orders). The partial index on ``account_id`` holds the
fills in flight only, so these reads are bounded by them.

Upgrade adds both columns (no table rewrite: the flag's default is a constant), fills them
from ``orders`` and ``settlements`` (one pass over ``executions``), then builds the index.
Downgrade drops them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 02:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEX = "ix_executions_awaiting_settlement"


def upgrade() -> None:
    op.add_column("executions", sa.Column("account_id", sa.Text()))
    op.add_column(
        "executions",
        sa.Column("awaiting_settlement", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        """
        UPDATE executions e
           SET account_id = o.account_id,
               awaiting_settlement = e.kind IN ('fill', 'partial_fill')
                   AND e.outcome IN ('applied', 'ignored_late')
                   AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.report_id = e.report_id)
          FROM orders o
         WHERE o.id = e.order_id
        """
    )
    op.execute(f"CREATE INDEX {INDEX} ON executions (account_id) WHERE awaiting_settlement")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_column("executions", "awaiting_settlement")
    op.drop_column("executions", "account_id")
