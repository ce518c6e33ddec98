"""Migrations 0007 and 0009 on a database of their own: the sweeper's query of stalled requests
reads the partial index of requested single-account rebalances, and downgrade drops it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from rebalancer.adapters import migrate
from rebalancer.adapters.repositories.rebalancing import RebalancingRepository

pytestmark = pytest.mark.integration


_STALLED_0007 = (
    "SELECT id FROM rebalances WHERE tenant_id = 't' AND status = 'requested' "
    "AND batch_id IS NULL AND updated_at < now() ORDER BY updated_at LIMIT 500 "
    "FOR UPDATE SKIP LOCKED"
)
"""The sweeper's query as of migration 0007 (migration 0009 moved it to ``published_at``)."""


def _plan(engine: sa.Engine, query: str | None = None) -> str:
    """``EXPLAIN`` of ``query``, by default the repository's query of stalled requests."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))  # tiny table: ask for any index
        if query is not None:
            rows = conn.exec_driver_sql(f"EXPLAIN {query}")
        else:
            q = RebalancingRepository(conn, "t")._stalled_query(datetime.now(UTC), 500)
            compiled = q.compile(conn)
            rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
        return "\n".join(r[0] for r in rows)


def test_migration_0007_indexes_the_requested_rebalances(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0006")
    assert "ix_rebalances_requested" not in _plan(scratch, _STALLED_0007)
    migrate.upgrade(scratch, "0007")
    assert "ix_rebalances_requested" in _plan(scratch, _STALLED_0007)
    migrate.downgrade(scratch, "0006")
    assert "ix_rebalances_requested" not in _plan(scratch, _STALLED_0007)


def test_migration_0009_moves_the_index_to_published_at(scratch: sa.Engine) -> None:
    """0009 adds ``published_at`` (back-filled from ``updated_at`` for requested rows), the
    repository's query reads the index by it, and downgrade restores 0007's index."""
    migrate.upgrade(scratch, "0008")
    with scratch.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id) VALUES ('t')"))
        conn.execute(sa.text("INSERT INTO accounts (id, tenant_id) VALUES ('a', 't')"))
        for status in ("requested", "pending_approval"):
            conn.execute(
                sa.text(
                    "INSERT INTO rebalances (id, tenant_id, account_id, status, updated_at) "
                    "VALUES (gen_random_uuid(), 't', 'a', :s, now() - interval '1 hour')"
                ),
                {"s": status},
            )
    migrate.upgrade(scratch, "0009")
    with scratch.connect() as conn:
        got = dict(
            conn.execute(sa.text("SELECT status, published_at = updated_at FROM rebalances")).all()
        )
    assert got == {"requested": True, "pending_approval": False}
    assert "ix_rebalances_requested" in _plan(scratch)
    migrate.downgrade(scratch, "0008")
    assert "ix_rebalances_requested" in _plan(scratch, _STALLED_0007)
    with scratch.connect() as conn:
        cols = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'rebalances' AND column_name = 'published_at'"
            )
        ).all()
    assert cols == []
