"""rebalancing coordination: follow-up link, settlement-overdue mark, unsettled cash backfill

- ``rebalances.parent_rebalance_id`` (unique, FK to ``rebalances.id``) and
  ``rebalances.remainder_round``: a partly done rebalance has at most one follow-up (the unique
  constraint, not a lookup by reason, is what guarantees it); existing follow-ups (reason
  ``remainder_of:<id>``) are linked.
- ``executions.overdue_alerted_at``: the sweeper's ``settlement_overdue`` alert is raised once
  per fill.
- ``cash_balances.unsettled_purchases`` / ``unsettled_proceeds`` are filled from the fills that
  have no settlement outcome yet (the service keeps them current from now on).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 06:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LINK_EXISTING = """
WITH links AS (
    SELECT DISTINCT ON (p.id) r.id AS child, p.id AS parent
    FROM rebalances r
    JOIN rebalances p
      ON p.tenant_id = r.tenant_id
     AND r.reasons @> jsonb_build_array('remainder_of:' || p.id::text)
    ORDER BY p.id, r.created_at, r.id
)
UPDATE rebalances r
SET parent_rebalance_id = links.parent, remainder_round = 1
FROM links
WHERE r.id = links.child
"""

_UNSETTLED = """
UPDATE cash_balances cb SET
  unsettled_purchases = COALESCE((
    SELECT sum(e.fill_quantity * e.fill_price)
    FROM executions e JOIN orders o ON o.id = e.order_id
    WHERE o.account_id = cb.account_id AND o.side = 'buy'
      AND e.kind IN ('fill', 'partial_fill') AND e.outcome IN ('applied', 'ignored_late')
      AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.report_id = e.report_id)
  ), 0),
  unsettled_proceeds = COALESCE((
    SELECT sum(e.fill_quantity * e.fill_price)
    FROM executions e JOIN orders o ON o.id = e.order_id
    WHERE o.account_id = cb.account_id AND o.side = 'sell'
      AND e.kind IN ('fill', 'partial_fill') AND e.outcome IN ('applied', 'ignored_late')
      AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.report_id = e.report_id)
  ), 0)
"""


def upgrade() -> None:
    op.add_column(
        "rebalances", sa.Column("parent_rebalance_id", postgresql.UUID(as_uuid=True), nullable=True)
    )
    op.add_column(
        "rebalances",
        sa.Column("remainder_round", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_foreign_key(
        op.f("fk_rebalances_parent_rebalance_id_rebalances"),
        "rebalances",
        "rebalances",
        ["parent_rebalance_id"],
        ["id"],
    )
    op.execute(_LINK_EXISTING)
    op.create_unique_constraint(
        op.f("uq_rebalances_parent_rebalance_id"), "rebalances", ["parent_rebalance_id"]
    )
    op.add_column(
        "executions",
        sa.Column("overdue_alerted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(_UNSETTLED)


def downgrade() -> None:
    op.drop_column("executions", "overdue_alerted_at")
    op.drop_constraint(op.f("uq_rebalances_parent_rebalance_id"), "rebalances", type_="unique")
    op.drop_constraint(
        op.f("fk_rebalances_parent_rebalance_id_rebalances"), "rebalances", type_="foreignkey"
    )
    op.drop_column("rebalances", "remainder_round")
    op.drop_column("rebalances", "parent_rebalance_id")
