"""when a requested rebalance's trigger was last published, apart from ``updated_at``.

The order sweeper publishes the ``rebalance_triggered`` event of a single-account rebalance
again when it has stayed ``requested`` for a timeout (a broker can strand the original). It
read ``updated_at``, which every trigger that joins the open rebalance (coalescing) also
stamps: an account whose drift breached again within every timeout (a threshold trigger on
each market-data tick, say) kept its stranded request from ever being published again.
``published_at`` is stamped only when the event is published (the row's creation and each
requeue), and the partial index of migration 0007 now orders by it.

``now()`` is a stable default, so adding the column rewrites no table; only the requested
rows (the ones the sweeper reads) are back-filled from ``updated_at``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ix_rebalances_requested"
_REQUESTED = "status = 'requested' AND batch_id IS NULL"


def upgrade() -> None:
    op.add_column(
        "rebalances",
        sa.Column(
            "published_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.execute(f"UPDATE rebalances SET published_at = updated_at WHERE {_REQUESTED}")
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.execute(f"CREATE INDEX {INDEX} ON rebalances (tenant_id, published_at) WHERE {_REQUESTED}")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_column("rebalances", "published_at")
    op.execute(f"CREATE INDEX {INDEX} ON rebalances (tenant_id, updated_at) WHERE {_REQUESTED}")
