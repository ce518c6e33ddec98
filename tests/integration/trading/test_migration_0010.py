"""Migration 0010 on a database of its own: clearing a fill's raised ``settlement_overdue``
alert (every settlement does) reads the partial index of raised alerts instead of the whole
``alerts`` table, and downgrade drops the index."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from migrationhelpers import plan

from rebalancer.adapters import migrate
from rebalancer.adapters.repositories import coordination

pytestmark = pytest.mark.integration

_INDEX = "ix_alerts_raised_kind_key"


def _plan(engine: sa.Engine) -> str:
    """``EXPLAIN`` of the repository's clearing statement for one report id."""
    return plan(engine, coordination._CLEAR_OVERDUE, {"tid": "t", "report_id": "r-1"})


def test_migration_0010_indexes_the_raised_alerts(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0009")
    assert _INDEX not in _plan(scratch)
    migrate.upgrade(scratch, "0010")
    assert _INDEX in _plan(scratch)
    with scratch.begin() as conn:  # the index holds raised alerts only
        conn.execute(sa.text("INSERT INTO tenants (id) VALUES ('t')"))
        conn.execute(sa.text("INSERT INTO accounts (id, tenant_id) VALUES ('a', 't')"))
        for state, key in (("raised", "r-1"), ("cleared", "r-2")):
            conn.execute(
                sa.text(
                    "INSERT INTO alerts (id, tenant_id, account_id, kind, level, key, severity, "
                    "state) VALUES (gen_random_uuid(), 't', 'a', 'settlement_overdue', "
                    "'settlement', :key, 'warning', :state)"
                ),
                {"key": key, "state": state},
            )
        conn.execute(sa.text("ANALYZE alerts"))
        indexed = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = :i"), {"i": _INDEX}
        ).scalar_one()
        assert indexed == 1
        conn.execute(coordination._CLEAR_OVERDUE, {"tid": "t", "report_id": "r-1"})
        states = conn.execute(sa.text("SELECT key, state FROM alerts ORDER BY key")).all()
        assert [tuple(r) for r in states] == [("r-1", "cleared"), ("r-2", "cleared")]
    migrate.downgrade(scratch, "0009")
    assert _INDEX not in _plan(scratch)
