"""Benchmark what follows a batch rebalance: approvals, execution reports and settlements.

Run from the repo root::

    .venv/bin/python -m bench.trading --accounts 200

A batch rebalance (bench/batch.py) leaves every account of a model with a recommendation. This
script measures the service's side of trading them through: approving each recommendation
(orders created exactly once, ``order_placed`` events in the outbox), the venue's execution
reports and the custodian's settlement confirmations, each through the real handler on the
embedded PostgreSQL, one unit of work per event, as a consumer thread runs them (without the
broker: the relay and Pulsar are measured by bench/relay.py).

Steps: load a synthetic book (50 instruments, 1-2 tax lots per holding, COPY), compute its
batch in this process with the fast path, approve every ``rebalance`` recommendation, then
repeat until nothing moves: hand the new orders to
:class:`~rebalancer.simulators.venue.SimulatedVenue` (no rejects or partial fills: every order
fills), apply its reports, settle every fill with
:class:`~rebalancer.simulators.settlement.SettlementAgent` and apply the confirmations. Wave-1
buys wait for settled sale proceeds, so they come in a later round. Per handler: events, wall
and CPU time of this process (the handlers' Python), PostgreSQL's CPU (postmaster and backends,
sampled around each phase). Writes the "trading" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._report import markdown_table, write_section
from bench.batch import TENANT, CpuMeter, batch_items
from bench.history import add_settled_history
from rebalancer.adapters import orm
from rebalancer.adapters.repositories.bulk import load_scaled_book
from rebalancer.bootstrap import Runtime, bootstrap
from rebalancer.config import Settings
from rebalancer.contracts import (
    Envelope,
    EventType,
    ExecutionReportV1,
    OrderPlacedV1,
    decode,
    parse_payload_as,
)
from rebalancer.domain.execution import BLOCK_ACCOUNT_ID
from rebalancer.entrypoints.batch_worker import BatchSolver, make_engine, single_threaded_blas
from rebalancer.scaled_book import build_scaled_book
from rebalancer.service_layer.handlers import settling, trading
from rebalancer.service_layer.handlers.batch import approve_batch, batch_progress, recommend_chunk
from rebalancer.service_layer.unit_of_work import UnitOfWork
from rebalancer.simulators.settlement import SettlementAgent
from rebalancer.simulators.venue import SimulatedVenue

CHUNK = 64
"""Accounts per in-process batch chunk (the workers' default)."""


@dataclass
class Stage:
    """Time spent in one handler: events, wall seconds, this process's CPU seconds and
    PostgreSQL's CPU seconds."""

    events: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    pg_s: float = 0.0


@dataclass
class Timings:
    """Per-handler :class:`Stage` totals and the PostgreSQL CPU meter they sample."""

    meter: CpuMeter
    stages: dict[str, Stage] = field(default_factory=dict)

    def run(self, name: str, items: Iterable[Any], handle: Callable[[Any], object]) -> None:
        """Apply ``handle`` to every item, adding the time to stage ``name``."""
        st = self.stages.setdefault(name, Stage())
        pg0 = self.meter.now()["postgres"]
        w0, c0 = time.perf_counter(), time.process_time()
        for item in items:
            handle(item)
            st.events += 1
        st.wall_s += time.perf_counter() - w0
        st.cpu_s += time.process_time() - c0
        st.pg_s += self.meter.now()["postgres"] - pg0


class Market:
    """Reads the tenant's new ``order_placed`` events from the outbox and plays venue and
    custodian for them (every order fills in full at the last close)."""

    def __init__(self, rt: Runtime, prices: dict[str, Decimal]) -> None:
        self.rt = rt
        self.prices = prices
        self.venue = SimulatedVenue(seed=1)
        self.agent = SettlementAgent()
        with rt.engine.connect() as conn:
            start = int(conn.execute(sa.select(sa.func.max(orm.outbox.c.id))).scalar() or 0)
        self.after = {EventType.ORDER_PLACED: start, EventType.EXECUTION_REPORT: start}

    def _since(self, kind: EventType) -> list[Envelope]:
        """The outbox events of ``kind`` written since the last call for that kind."""
        t = orm.outbox
        with self.rt.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.body)
                .where(t.c.id > self.after[kind], t.c.type == kind.value)
                .order_by(t.c.id)
            ).all()
        if rows:
            self.after[kind] = int(rows[-1].id)
        return [decode(bytes(r.body)) for r in rows]

    def new_orders(self) -> list[OrderPlacedV1]:
        """``order_placed`` events written since the last call."""
        return [parse_payload_as(e, OrderPlacedV1) for e in self._since(EventType.ORDER_PLACED)]

    def reports(self, orders: list[OrderPlacedV1]) -> list[ExecutionReportV1]:
        out: list[ExecutionReportV1] = []
        for o in orders:
            out += self.venue.handle_order(o, self.prices[o.instrument])
        return out

    def confirmations(self, reports: list[ExecutionReportV1]) -> list[Any]:
        """The custodian's confirmations of the accounts' fills: the fills of single orders
        among ``reports``, and the allocations of block fills (the ``execution_report``
        events the block handler wrote to the outbox since the last call)."""
        children = [
            parse_payload_as(e, ExecutionReportV1) for e in self._since(EventType.EXECUTION_REPORT)
        ]
        fills = [
            r
            for r in [*reports, *children]
            if r.kind.is_fill and r.fill_quantity > 0 and r.account_id != BLOCK_ACCOUNT_ID
        ]
        return [self.agent.settle(r, r.venue_time.date(), 1) for r in fills]


def _load(rt: Runtime, n: int, instruments: int) -> tuple[str, dict[str, Decimal]]:
    book = build_scaled_book(
        n, n_instruments=instruments, prefix=f"T{uuid.uuid4().hex[:4].upper()}", tenant_id=TENANT
    )
    with rt.engine.begin() as conn:
        load_scaled_book(conn, book)
    last = book.closes[-1]
    prices = {
        inst.id: Decimal(str(round(float(p), 4)))
        for inst, p in zip(book.instruments, last, strict=True)
    }
    return book.model.id, prices


def _recommend(rt: Runtime, model_id: str) -> list[uuid.UUID]:
    """Compute the model's batch in this process; returns the ``rebalance`` recommendations."""
    single_threaded_blas()
    engine = make_engine(BatchSolver.FAST)
    items = batch_items(rt, model_id)
    for k in range(0, len(items), CHUNK):
        with UnitOfWork(rt.engine, TENANT) as uow:
            recommend_chunk(uow, engine, items[k : k + CHUNK])
    rec = orm.recommendations
    with rt.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(rec.c.id).where(
                    rec.c.tenant_id == TENANT,
                    rec.c.decision == "rebalance",
                    rec.c.status == "pending_approval",  # not the --history-rounds ones
                )
            ).scalars()
        )


def trade_through(
    rt: Runtime,
    root: Path,
    recs: list[uuid.UUID],
    prices: dict[str, Decimal],
    approval_chunk: int = 0,
) -> Timings:
    """Approve ``recs`` (one by one, or with ``approve_batch`` in chunks of
    ``approval_chunk``: block orders) and run the market until nothing moves; returns the
    handler timings."""
    timings = Timings(CpuMeter(root, []))
    market = Market(rt, prices)

    def approve(rec: uuid.UUID) -> None:
        with UnitOfWork(rt.engine, TENANT) as uow:
            trading.approve(uow, rec, "bench")

    def report(r: ExecutionReportV1) -> None:
        with UnitOfWork(rt.engine, TENANT) as uow:
            trading.apply_execution_report(uow, r)

    def settle(conf: Any) -> None:
        with UnitOfWork(rt.engine, TENANT) as uow:
            settling.apply_settlement_confirmation(uow, conf)

    if approval_chunk:
        with rt.engine.connect() as conn:
            (batch_id,) = conn.execute(sa.select(orm.batches.c.id)).scalars()
        approve_in_chunks(rt, timings, batch_id, approval_chunk)
    else:
        timings.run("approval", recs, approve)
    for _ in range(10):  # wave 0, then the buys released by settled sales
        orders = market.new_orders()
        if not orders:
            break
        reports = market.reports(orders)
        timings.run("execution report", reports, report)
        timings.run("settlement", market.confirmations(reports), settle)
    return timings


def approve_in_chunks(rt: Runtime, timings: Timings, batch_id: uuid.UUID, chunk: int) -> None:
    """Approve the batch's recommendations with ``approve_batch``, ``chunk`` per call and per
    transaction (a chunk's shared instruments as block orders), timed as one event per
    chunk."""
    with UnitOfWork(rt.engine, TENANT) as uow:
        left = batch_progress(uow, batch_id)["counts"].get("pending_approval", 0)
    calls = range((left + chunk - 1) // chunk)

    def approve(_: int) -> None:
        approve_batch(
            lambda: UnitOfWork(rt.engine, TENANT),
            batch_id,
            actor="bench",
            max_accounts=chunk,
            chunk_size=chunk,
        )

    timings.run(f"batch approval, {chunk} per transaction", calls, approve)


def _venue_orders(rt: Runtime) -> tuple[int, int]:
    """Account orders sent so far, and the orders the venue received for them (``order_placed``
    events: one per block order or single order)."""
    with rt.engine.connect() as conn:
        accounts = conn.execute(
            sa.select(sa.func.count())
            .select_from(orm.orders)
            .where(orm.orders.c.tenant_id == TENANT, orm.orders.c.status != "new")
        ).scalar_one()
        venue = conn.execute(
            sa.select(sa.func.count())
            .select_from(orm.outbox)
            .where(orm.outbox.c.type == EventType.ORDER_PLACED.value)
        ).scalar_one()
    return int(accounts), int(venue)


def _table(t: Timings, accounts: int) -> str:
    rows = []
    per_account = 0.0
    for name, st in t.stages.items():
        n = max(st.events, 1)
        total_ms = (st.cpu_s + st.pg_s) / n * 1e3
        per_account += (st.cpu_s + st.pg_s) / accounts
        rows.append(
            [
                name,
                f"{st.events:,}",
                round(st.events / accounts, 2),
                round(st.wall_s / n * 1e3, 1),
                round(st.cpu_s / n * 1e3, 1),
                round(st.pg_s / n * 1e3, 1),
                round(total_ms, 1),
                round(n / st.wall_s, 1) if st.wall_s else "",
            ]
        )
    table = markdown_table(
        [
            "handler",
            "events",
            "per account",
            "wall ms/event",
            "handler CPU ms/event",
            "postgres CPU ms/event",
            "CPU ms/event",
            "events/s (one thread)",
        ],
        rows,
    )
    return (
        f"{table}\n\nCPU per account traded through (approval, reports and settlements, handler "
        f"and PostgreSQL): {per_account * 1e3:,.0f} ms; at that cost "
        "10,000 accounts need about "
        f"{per_account * 10_000 / 2:,.0f} s of both cores of a 2-core machine."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--section", default="trading", help="section of docs/benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave the docs alone")
    ap.add_argument(
        "--history-rounds",
        type=int,
        default=0,
        help="settled rebalances already in each account's history (bench/history.py)",
    )
    ap.add_argument(
        "--approval-chunk",
        type=int,
        default=0,
        help="approve with POST /v1/batches/{id}/approve's handler, this many per transaction "
        "(block orders; 0: one approval per recommendation, single orders)",
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-trading-"))
    rt = bootstrap(Settings(data_dir=root, log_json=False, log_level="WARNING"))
    try:
        model_id, prices = _load(rt, args.accounts, args.instruments)
        with rt.engine.begin() as conn:
            history = add_settled_history(conn, TENANT, args.history_rounds)
        recs = _recommend(rt, model_id)
        timings = trade_through(rt, root, recs, prices, args.approval_chunk)
        sent, venue = _venue_orders(rt)
    finally:
        rt.close()
    intro = (
        f"{args.accounts:,} accounts of {args.instruments} instruments after a batch rebalance "
        f"({len(recs):,} recommendations to trade); one unit of work per event on one thread, "
        "embedded PostgreSQL on the same 2-core machine; every order fills in full, every fill "
        f"settles. {sent:,} account orders went to the venue as {venue:,} orders."
    )
    if history:
        intro += (
            f" Each account already had {args.history_rounds} settled rebalances in its history "
            f"({history:,} orders in all, each with an acknowledgement, a fill and a settlement; "
            "bench/history.py, tables analyzed after loading)."
        )
    if args.approval_chunk:
        intro += (
            f" Approved {args.approval_chunk} recommendations per transaction through "
            "`approve_batch` (POST /v1/batches/{id}/approve): a chunk's first-wave orders of one "
            "instrument and side go out as one block order, whose reports the handler allocates "
            "to the accounts' orders (each allocation then settles on its own)."
        )
    intro += "\n\n"
    body = intro + _table(timings, args.accounts)
    if args.no_doc:
        print(body)
    else:
        title = "Trading a batch through: approvals, reports, settlements"
        if args.approval_chunk:
            title += f" (approved {args.approval_chunk} per transaction: block orders)"
        if history:
            title += f", {args.history_rounds} rebalances of history"
        write_section(args.section, title, body)


if __name__ == "__main__":
    main()
