"""a partial index of the single-account rebalances still ``requested``.

The order sweeper asks every few seconds for the requested rebalances nobody picked up
(``RebalancingRepository.stalled_requests``: tenant, ``status = 'requested'``, no batch,
oldest ``updated_at`` first). Without an index of its own that query read every rebalance of
the tenant through the ``tenant_id`` index (10,000 more after every 10,000-account batch,
forever). The partial index holds only the rows the query can return, normally a handful, in
the order it wants them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 15:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_rebalances_requested"


def upgrade() -> None:
    op.execute(
        f"CREATE INDEX {INDEX} ON rebalances (tenant_id, updated_at) "
        "WHERE status = 'requested' AND batch_id IS NULL"
    )


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
