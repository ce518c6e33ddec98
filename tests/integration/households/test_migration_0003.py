"""Migration 0003 on a database of its own: the sleeve attribution tables appear, cascade with
their sleeve, refuse negative quantities and go away on downgrade."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from rebalancer.adapters import migrate

pytestmark = pytest.mark.integration


def _tables(eng: sa.Engine) -> set[str]:
    return set(sa.inspect(eng).get_table_names())


def test_migration_0003_up_cascade_and_down(scratch: sa.Engine) -> None:
    migrate.upgrade(scratch, "0003")
    assert {"sleeve_holdings", "sleeve_cash"} <= _tables(scratch)
    with scratch.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tenants (id) VALUES ('t');"
                "INSERT INTO models (id, tenant_id, current_version) VALUES ('m', 't', 1);"
                "INSERT INTO accounts (id, tenant_id) VALUES ('a', 't');"
                "INSERT INTO sleeves (id, account_id, model_id, share) VALUES ('s', 'a', 'm', 1);"
                "INSERT INTO sleeve_holdings VALUES ('s', 'X', 10);"
                "INSERT INTO sleeve_cash VALUES ('s', 5);"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), scratch.begin() as conn:
        conn.execute(sa.text("INSERT INTO sleeve_holdings VALUES ('s', 'Y', -1)"))
    with scratch.begin() as conn:
        conn.execute(sa.text("DELETE FROM sleeves WHERE id = 's'"))
        left = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM sleeve_holdings) + (SELECT count(*) FROM sleeve_cash)"
            )
        ).scalar_one()
    assert left == 0
    migrate.downgrade(scratch, "0002")
    assert not {"sleeve_holdings", "sleeve_cash"} & _tables(scratch)
