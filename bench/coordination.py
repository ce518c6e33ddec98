"""Benchmark the coordination paths that run all the time: the service's consumption of its own
status events (closing the loop), and the sweeper's settlement-overdue check.

Run from the repo root: ``.venv/bin/python -m bench.coordination [--events N] [--fills N]``.
Starts an embedded PostgreSQL of its own, writes the "coordination" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import sqlalchemy as sa

from bench._report import markdown_table, write_section
from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine
from rebalancer.adapters.embedded import EmbeddedPostgres
from rebalancer.config import Settings
from rebalancer.contracts import EventType, StatusEntity, StatusUpdatedV1, new_event
from rebalancer.entrypoints.consumers import handle_event
from rebalancer.service_layer.handlers.settling import raise_overdue_settlements
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "bench"


def _status(entity: StatusEntity, status: str) -> object:
    payload = StatusUpdatedV1(
        entity=entity, entity_id=str(uuid.uuid4()), account_id="acc", status=status, previous=None
    )
    return new_event(EventType.STATUS_UPDATED, payload, tenant_id=TENANT, key="acc")


def bench_status_events(rt: object, n: int) -> list[list[object]]:
    """Median and p95 ms per status event through the consumer's code path."""
    rows = []
    cases = [
        ("order status (no effect, dropped before any transaction)", StatusEntity.ORDER, "filled"),
        (
            "rebalance partially_complete (transaction, lookups)",
            StatusEntity.REBALANCE,
            "partially_complete",
        ),
    ]
    for label, entity, status in cases:
        times = []
        for _ in range(n):
            env = _status(entity, status)
            t0 = time.perf_counter()
            handle_event(rt, env)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        rows.append([label, n, statistics.median(times), times[int(0.95 * (n - 1))]])
    return rows


SEED = """
INSERT INTO tenants (id) VALUES (:t);
INSERT INTO instruments (id, asset_class, sector, settlement_days) VALUES ('BX', 'equity', 'x', 1);
INSERT INTO accounts (id, tenant_id) VALUES ('acc', :t);
INSERT INTO cash_balances (account_id, settled) VALUES ('acc', 0);
INSERT INTO rebalances (id, tenant_id, account_id, status) VALUES (:reb, :t, 'acc', 'trading');
INSERT INTO recommendations (id, rebalance_id, tenant_id, account_id, decision, status, request,
  response) VALUES (:rec, :reb, :t, 'acc', 'rebalance', 'approved', '{}', '{}');
INSERT INTO orders (id, recommendation_id, tenant_id, account_id, instrument, side, quantity,
  filled_quantity, status) VALUES (:ord, :rec, :t, 'acc', 'BX', 'buy', 1000000, 0, 'sent');
"""


def bench_overdue(engine: sa.Engine, fills: int) -> list[list[object]]:
    """Seconds to alert ``fills`` unconfirmed fills, then to sweep again with nothing due."""
    ids = {"t": TENANT, "reb": uuid.uuid4(), "rec": uuid.uuid4(), "ord": uuid.uuid4()}
    with engine.begin() as conn:
        for stmt in SEED.strip().split(";"):
            if stmt.strip():
                conn.execute(sa.text(stmt), ids)
        conn.execute(
            sa.text(
                "INSERT INTO executions (report_id, order_id, tenant_id, kind, fill_quantity, "
                "fill_price, cumulative_quantity, sequence, outcome, venue_time) "
                "SELECT 'f' || g, :ord, :t, 'fill', 1, 10, g, g, 'applied', :ts "
                "FROM generate_series(1, :n) g"
            ),
            {**ids, "n": fills, "ts": datetime(2030, 6, 3, 15, tzinfo=UTC)},
        )
    today = date(2030, 6, 10)
    t0 = time.perf_counter()
    alerted, calls = 0, 0
    while True:
        with UnitOfWork(engine, TENANT) as uow:
            got = raise_overdue_settlements(uow, today, grace_business_days=1)
        calls += 1
        alerted += len(got)
        if not got:
            break
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    with UnitOfWork(engine, TENANT) as uow:
        assert raise_overdue_settlements(uow, today, grace_business_days=1) == []
    steady = time.perf_counter() - t0
    return [
        [
            f"alert {fills:,} overdue fills (batches of 500, one transaction each)",
            alerted,
            calls,
            first,
        ],
        ["next sweep, nothing new due", 0, 1, steady],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--fills", type=int, default=5000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-coordination-"))
    pg = EmbeddedPostgres(root, database=f"b_{uuid.uuid4().hex[:6]}")
    url = pg.start()
    try:
        settings = Settings(database_url=url, log_level="WARNING")
        engine = make_engine(url, settings)
        migrate.upgrade(engine)
        rt = types.SimpleNamespace(engine=engine, settings=settings)
        events = bench_status_events(rt, args.events)
        overdue = bench_overdue(engine, args.fills)
    finally:
        pg.stop()
    body = (
        "Status events consumed by the service (closing the loop):\n\n"
        + markdown_table(["event", "n", "median ms", "p95 ms"], events)
        + "\n\nSettlement-overdue check of the sweeper (one tenant):\n\n"
        + markdown_table(["sweep", "alerts", "transactions", "seconds"], overdue)
    )
    write_section(
        "coordination",
        "Coordination: status-event consumer and settlement-overdue sweep (bench/coordination.py)",
        body,
        command=f".venv/bin/python -m bench.coordination --events {args.events} "
        f"--fills {args.fills}",
    )


if __name__ == "__main__":
    main()
