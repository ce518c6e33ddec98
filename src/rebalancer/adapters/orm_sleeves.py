"""Per-sleeve attribution of an account's pooled holdings and cash (migration 0003).

Lots are held by the account; these rows say how much of each instrument (shares) and of the
cash (currency) each sleeve owns. They are optional: without them the service attributes
pooled holdings pro rata to what each sleeve should hold. Rows go with their sleeve
(``ON DELETE CASCADE``: replacing an account's sleeves drops its attribution).
"""

from __future__ import annotations

import sqlalchemy as sa

from rebalancer.adapters.orm import MONEY, SHARES, metadata

sleeve_holdings = sa.Table(
    "sleeve_holdings",
    metadata,
    sa.Column(
        "sleeve_id", sa.Text, sa.ForeignKey("sleeves.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("instrument", sa.Text, primary_key=True),
    sa.Column("quantity", SHARES, nullable=False),
    sa.CheckConstraint("quantity >= 0", name="quantity_nonneg"),
)

sleeve_cash = sa.Table(
    "sleeve_cash",
    metadata,
    sa.Column(
        "sleeve_id", sa.Text, sa.ForeignKey("sleeves.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("amount", MONEY, nullable=False),
)
