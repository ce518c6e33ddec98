"""Migration 0002 on a database of its own: it links existing follow-ups (reason
``remainder_of:<id>``), fills the unsettled cash columns from unsettled fills, enforces one
follow-up per rebalance, and downgrades cleanly."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from migrationhelpers import seed

from rebalancer.adapters import migrate

pytestmark = pytest.mark.integration


SEED = """
INSERT INTO tenants (id) VALUES ('t');
INSERT INTO instruments (id, asset_class, sector) VALUES ('X', 'equity', 'tech');
INSERT INTO accounts (id, tenant_id) VALUES ('acc', 't');
INSERT INTO cash_balances (account_id, settled) VALUES ('acc', 1000);
INSERT INTO rebalances (id, tenant_id, account_id, status, reasons) VALUES
  (:parent, 't', 'acc', 'partially_complete', '["drift"]'),
  (:child, 't', 'acc', 'pending_approval', jsonb_build_array('remainder_of:' || :parent));
INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, decision, status,
                             request, response)
  VALUES (:rec, :parent, 't', 'acc', 'rebalance', 'approved', '{}', '{}');
INSERT INTO orders (id, recommendation_id, tenant_id, account_id, instrument, side, quantity,
                    filled_quantity, status)
  VALUES (:buy, :rec, 't', 'acc', 'X', 'buy', 10, 10, 'filled');
INSERT INTO executions (report_id, order_id, tenant_id, kind, fill_quantity, fill_price,
                        cumulative_quantity, sequence, outcome, venue_time)
  VALUES ('f1', :buy, 't', 'fill', 10, 12.5, 10, 1, 'applied', now());
"""


def test_migration_0002_backfills_and_constrains_and_downgrades(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0001")
    ids = {k: str(uuid.uuid4()) for k in ("parent", "child", "rec", "buy")}
    seed(scratch, SEED, ids)
    migrate.upgrade(scratch, "0002")
    with scratch.connect() as conn:
        rows = conn.execute(sa.text("SELECT id::text, parent_rebalance_id::text FROM rebalances"))
        links = {r[0]: r[1] for r in rows}
        cash = conn.execute(
            sa.text("SELECT unsettled_purchases, unsettled_proceeds FROM cash_balances")
        ).one()
    assert links == {ids["parent"]: None, ids["child"]: ids["parent"]}
    assert (cash.unsettled_purchases, cash.unsettled_proceeds) == (125, 0)
    with pytest.raises(sa.exc.IntegrityError), scratch.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rebalances (id, tenant_id, account_id, status, parent_rebalance_id) "
                "VALUES (:id, 't', 'acc', 'requested', :parent)"
            ),
            {"id": str(uuid.uuid4()), "parent": ids["parent"]},
        )
    migrate.downgrade(scratch, "0001")
    with scratch.connect() as conn:
        cols = set(
            conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name IN ('rebalances', 'executions')"
                )
            ).scalars()
        )
    assert not cols & {"parent_rebalance_id", "remainder_round", "overdue_alerted_at"}
    migrate.upgrade(scratch, "0002")  # and up again
