"""how far behind the service's consumers read the venue's execution reports.

Each consumer process writes, at most once a second, the largest delay it saw between a
report's ``occurred_at`` and handling it (``consumer_lag``, one row per process). The order
sweeper holds its clock back by the largest recent delay: an acknowledgement waiting in the
broker's backlog is not a missing one, and re-sending those orders only added duplicate work
to the backlog (about 500 re-sends for 700 orders in the demo).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 20:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_lag",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("lag_s", sa.Float, nullable=False),
        sa.Column(
            "measured_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_consumer_lag")),
    )


def downgrade() -> None:
    op.drop_table("consumer_lag")
