"""Migration 0003 on a database of its own: the sleeve attribution tables appear, cascade with
their sleeve, refuse negative quantities and go away on downgrade."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine

pytestmark = pytest.mark.integration


@pytest.fixture()
def scratch(engine: Any) -> Iterator[sa.Engine]:
    name = f"mig3_{uuid.uuid4().hex[:8]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        eng.dispose()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _alembic(eng: sa.Engine, fn: Any, revision: str) -> None:
    cfg = migrate.alembic_config(eng.url.render_as_string(hide_password=False))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


def _tables(eng: sa.Engine) -> set[str]:
    return set(sa.inspect(eng).get_table_names())


def test_migration_0003_up_cascade_and_down(scratch: sa.Engine) -> None:
    _alembic(scratch, command.upgrade, "0003")
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
    _alembic(scratch, command.downgrade, "0002")
    assert not {"sleeve_holdings", "sleeve_cash"} & _tables(scratch)
