"""Rows the migration tests of this folder need before they can store a recommendation."""

from __future__ import annotations

import sqlalchemy as sa

REBALANCE_ID = "00000000-0000-0000-0000-000000000001"


def seed_rebalance(conn: sa.Connection) -> None:
    """Tenant ``t``, account ``a`` and a finished rebalance :data:`REBALANCE_ID`."""
    conn.execute(
        sa.text(
            "INSERT INTO tenants (id) VALUES ('t');"
            "INSERT INTO accounts (id, tenant_id) VALUES ('a', 't');"
            "INSERT INTO rebalances (id, tenant_id, account_id, status) "
            f"VALUES ('{REBALANCE_ID}', 't', 'a', 'no_trade');"
        )
    )
