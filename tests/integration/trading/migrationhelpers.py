"""Helpers of the migration tests that run on a database of their own (``scratch``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa


def seed(engine: sa.Engine, script: str, ids: Mapping[str, str]) -> None:
    """Run the ``;``-separated statements of ``script`` in one transaction, each with the
    ``ids`` it names (``:name``)."""
    with engine.begin() as conn:
        for stmt in script.strip().split(";"):
            if stmt.strip():
                conn.execute(sa.text(stmt), {k: v for k, v in ids.items() if f":{k}" in stmt})


def plan(engine: sa.Engine, stmt: Any, params: Mapping[str, Any]) -> str:
    """``EXPLAIN`` of ``stmt`` with ``params`` (expanding ones included), sequential scans off
    (the tables are tiny: any usable index is then chosen)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        state = stmt.compile(conn).construct_expanded_state(dict(params))
        rows = conn.exec_driver_sql(f"EXPLAIN {state.statement}", state.parameters)
        return "\n".join(r[0] for r in rows)


def columns(engine: sa.Engine, table: str) -> set[str]:
    """The column names of ``table`` as the database has them now."""
    q = "SELECT column_name FROM information_schema.columns WHERE table_name = :table"
    with engine.connect() as conn:
        return set(conn.execute(sa.text(q), {"table": table}).scalars())
