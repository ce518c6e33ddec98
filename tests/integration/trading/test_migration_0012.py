"""Migration 0012 on a database of its own: a realized gain carries its sale's trade date
(filled from ``settlements``), the recent loss sales of a batch chunk are read from the
partial index of the losses, and downgrade drops both."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from migrationhelpers import columns, plan, seed

from rebalancer.adapters import migrate
from rebalancer.adapters.repositories import tax

pytestmark = pytest.mark.integration

_INDEX = "ix_realized_gains_recent_losses"
_SEED = """
INSERT INTO tenants (id) VALUES ('t');
INSERT INTO accounts (id, tenant_id) VALUES ('acc', 't');
INSERT INTO settlements (id, report_id, order_id, tenant_id, account_id, instrument, side,
                         quantity, price, trade_date, settle_date, status)
VALUES ('s-1', 'r-1', gen_random_uuid(), 't', 'acc', 'AAA', 'sell', 10, 9, '2024-03-01',
        '2024-03-04', 'settled'),
       ('s-2', 'r-2', gen_random_uuid(), 't', 'acc', 'BBB', 'sell', 10, 9, '2024-03-05',
        '2024-03-06', 'settled');
INSERT INTO realized_gains (settlement_id, account_id, lot_id, instrument, quantity, proceeds,
                            cost, gain, term, settle_date)
VALUES ('s-1', 'acc', 'l-1', 'AAA', 10, 90, 100, -10, 'short', '2024-03-04'),
       ('s-1', 'acc', 'l-2', 'AAA', 10, 90, 80, 10, 'long', '2024-03-04'),
       ('s-2', 'acc', 'l-3', 'BBB', 10, 90, 95, -5, 'short', '2024-03-06')
"""
_WINDOW = {"ids": ["acc"], "tid": "t", "lo": date(2024, 3, 2), "hi": date(2024, 3, 31)}


def test_migration_0012_dates_the_gains_and_indexes_the_losses(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0011")
    seed(scratch, _SEED, {})
    migrate.upgrade(scratch, "0012")
    with scratch.connect() as conn:
        got = conn.execute(sa.text("SELECT lot_id, trade_date FROM realized_gains")).all()
        nullable = conn.execute(
            sa.text(
                "SELECT is_nullable FROM information_schema.columns "
                "WHERE table_name = 'realized_gains' AND column_name = 'trade_date'"
            )
        ).scalar_one()
        window = conn.execute(tax._RECENT_LOSSES, _WINDOW).all()
    assert dict(got) == {
        "l-1": date(2024, 3, 1),
        "l-2": date(2024, 3, 1),
        "l-3": date(2024, 3, 5),
    }
    assert nullable == "NO"
    # AAA traded before the window (its settlement falls inside it); BBB's loss is inside
    assert [tuple(r) for r in window] == [("acc", "BBB", date(2024, 3, 5))]
    assert _INDEX in plan(scratch, tax._RECENT_LOSSES, _WINDOW)
    migrate.downgrade(scratch, "0011")
    assert "trade_date" not in columns(scratch, "realized_gains")
    migrate.upgrade(scratch, "0012")  # and up again
    assert "trade_date" in columns(scratch, "realized_gains")
