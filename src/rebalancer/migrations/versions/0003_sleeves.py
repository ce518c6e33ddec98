"""sleeve attribution: ``sleeve_holdings`` (shares of each instrument a sleeve owns) and
``sleeve_cash`` (the cash it owns), both removed with their sleeve.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 07:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SHARES = sa.Numeric(20, 6)


def upgrade() -> None:
    op.create_table(
        "sleeve_holdings",
        sa.Column(
            "sleeve_id",
            sa.Text,
            sa.ForeignKey("sleeves.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("instrument", sa.Text, primary_key=True),
        sa.Column("quantity", _SHARES, nullable=False),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_sleeve_holdings_quantity_nonneg")),
    )
    op.create_table(
        "sleeve_cash",
        sa.Column(
            "sleeve_id",
            sa.Text,
            sa.ForeignKey("sleeves.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("amount", _SHARES, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sleeve_cash")
    op.drop_table("sleeve_holdings")
