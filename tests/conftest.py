"""Shared fixtures: one embedded PostgreSQL and one pulsar-lite broker per test session.

Integration and end-to-end tests run against real servers, never mocks of our own
infrastructure. Each test session gets a fresh database; tests isolate themselves by using
unique tenant and entity ids (see :func:`unique`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The service's default chain is the JAX fast path, warmed up at API and worker start-up by a
# background compile of 13-16 s per size bucket. The suite runs the Clarabel chain (set here so
# that API and worker subprocesses inherit it): no compile competes with the tests on CI's two
# cores. The tests of the fast chain and its warm-up build it explicitly.
os.environ.setdefault("REBALANCER_SOLVER_CHAIN", "clarabel")


def unique(prefix: str) -> str:
    """A short unique id such as ``acct-3f2a9c``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def infra_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rebalancer-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg(infra_root: Path) -> Iterator[object]:
    from rebalancer.adapters.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(infra_root, database=f"test_{uuid.uuid4().hex[:8]}")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def embedded_broker(infra_root: Path) -> Iterator[object]:
    from rebalancer.adapters.embedded import EmbeddedPulsar

    broker = EmbeddedPulsar(infra_root)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def settings(infra_root: Path, embedded_pg: object, embedded_broker: object) -> object:
    from rebalancer.config import ApiKeySpec, Scope, Settings

    return Settings(
        database_url=embedded_pg.url,  # type: ignore[attr-defined]
        pulsar_url=embedded_broker.url,  # type: ignore[attr-defined]
        data_dir=infra_root,
        api_keys=[
            ApiKeySpec(key="test-admin-key", tenant="tenant-a", scopes=list(Scope)),
            ApiKeySpec(key="test-admin-key-b", tenant="tenant-b", scopes=list(Scope)),
            ApiKeySpec(key="test-read-key", tenant="tenant-a", scopes=[Scope.READ]),
        ],
        log_json=False,
        log_level="WARNING",
    )


@pytest.fixture(scope="session")
def runtime(settings: object) -> Iterator[object]:
    """A bootstrapped runtime (schema migrated) on the session's servers."""
    from rebalancer.bootstrap import bootstrap

    rt = bootstrap(settings)  # type: ignore[arg-type]
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def engine(runtime: object) -> object:
    return runtime.engine  # type: ignore[attr-defined]


@pytest.fixture()
def sql_log(engine: Any) -> Iterator[list[str]]:
    """The SQL statements sent on the session's engine while the test runs, in order (clear
    the list to start counting at a point of the test)."""
    import sqlalchemy as sa

    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture()
def scratch(engine: Any) -> Iterator[Any]:
    """An empty database of its own on the session's server (migration tests), dropped after."""
    import sqlalchemy as sa

    from rebalancer.adapters.db import make_engine

    name = f"scratch_{uuid.uuid4().hex[:8]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        eng.dispose()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
