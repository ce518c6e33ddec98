"""Migration 0007 on a database of its own: the sweeper's query of stalled requests reads the
partial index of requested single-account rebalances, and downgrade drops it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from rebalancer.adapters import migrate
from rebalancer.adapters.repositories.rebalancing import RebalancingRepository

pytestmark = pytest.mark.integration


def _plan(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))  # tiny table: ask for any index
        q = RebalancingRepository(conn, "t")._stalled_query(datetime.now(UTC), 500)
        compiled = q.compile(conn)
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
        return "\n".join(r[0] for r in rows)


def test_migration_0007_indexes_the_requested_rebalances(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0006")
    assert "ix_rebalances_requested" not in _plan(scratch)
    migrate.upgrade(scratch, "0007")
    assert "ix_rebalances_requested" in _plan(scratch)
    migrate.downgrade(scratch, "0006")
    assert "ix_rebalances_requested" not in _plan(scratch)
