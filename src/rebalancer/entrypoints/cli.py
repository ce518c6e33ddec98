"""The ``rebalancer`` command line (typer)."""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

import typer

from rebalancer.config import Settings, get_settings
from rebalancer.entrypoints.cli_ops import apikey_app, dlq_app

app = typer.Typer(help="rebalancer: keep investment portfolios on target.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(apikey_app, name="apikey")
app.add_typer(dlq_app, name="dlq")


def _settings() -> Settings:
    return get_settings()


def _leave(code: int = 0) -> NoReturn:
    """Exit with ``code`` right away once a long-running command has closed its runtime.

    pulsar-client's C++ threads can abort the interpreter's final teardown ("terminate called
    without an active exception") even after every client was closed. Everything is flushed,
    closed and committed by now, so skipping that teardown loses nothing and keeps the exit
    code honest for supervisors (SIGTERM -> 0).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision.")) -> None:
    """Apply the schema migrations (embedded PostgreSQL when no database URL is set)."""
    from rebalancer.adapters import migrate
    from rebalancer.adapters.db import make_engine
    from rebalancer.bootstrap import start_infrastructure

    s = _settings().model_copy(update={"pulsar_url": _settings().pulsar_url or "pulsar://unused:1"})
    infra = start_infrastructure(s)
    try:
        engine = make_engine(infra.database_url, s)
        migrate.upgrade(engine, revision)
        typer.echo(
            f"schema at {revision}; time-series backend: {migrate.time_series_backend(engine)}"
        )
        engine.dispose()
    finally:
        infra.stop()


@app.command()
def demo(
    once: bool = typer.Option(False, "--once", help="Exit after one cycle."),
    days: int = typer.Option(2, help="Market days to simulate before approving."),
    accounts: int = typer.Option(50, help="Accounts in the sample book."),
    seed: int = typer.Option(7, help="Seed of the sample book."),
) -> None:
    """Run the whole loop on embedded defaults and print a summary."""
    from rebalancer.entrypoints.demo import run_demo

    _leave(run_demo(_settings(), once=once, days=days, seed=seed, accounts=accounts))


@app.command()
def serve(
    with_worker: bool = typer.Option(
        True, help="Also run consumers and the outbox relay in this process."
    ),
) -> None:
    """Serve the HTTP API (and, by default, the event consumers and outbox relay)."""
    from rebalancer.adapters.pulsar_subscribe import SubscribeCancelled
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.entrypoints.apiserver import ApiServer
    from rebalancer.entrypoints.consumers import Worker

    rt = bootstrap(_settings())
    install_signal_handlers(rt)
    server = ApiServer(rt)
    try:
        worker = Worker(rt) if with_worker else None
    except SubscribeCancelled:  # stopped before the broker accepted the subscriptions
        rt.close()
        _leave()
    try:
        server.start()
        if worker is not None:
            worker.start()
        typer.echo(f"API on {server.url} (OpenAPI at {server.url}/docs)")
        rt.stop_event.wait()
    finally:
        server.stop()
        if worker is not None:
            worker.join()
        rt.close()
    _leave()


@app.command()
def worker(
    threads: int = typer.Option(2, help="Consumer threads on the Shared subscription."),
    relay: bool = typer.Option(False, help="Also run the outbox relay."),
    solver: str = typer.Option(
        None, help="Batch solver chain: fast (JAX first) or clarabel (default: fast)."
    ),
    batch_threads: int = typer.Option(
        1, min=0, help="Batch-rebalance loops (each takes one chunk of accounts at a time)."
    ),
) -> None:
    """Consume events (market data, reports, settlements, rebalance requests) until stopped."""
    from rebalancer.adapters.pulsar_subscribe import SubscribeCancelled
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.config import SolverChain
    from rebalancer.entrypoints.batch_worker import BatchSolver, default_solver, parse_solver
    from rebalancer.entrypoints.consumers import Worker
    from rebalancer.entrypoints.xla_threads import limit_xla_threads

    settings = _settings()
    try:
        batch_solver = parse_solver(solver) if solver else default_solver()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--solver") from None
    uses_jax = batch_solver is BatchSolver.FAST or (
        threads > 0 and settings.solver_chain is SolverChain.FAST
    )
    # before anything starts JAX (its CPU pool is sized once); a Clarabel-only worker never
    # loads JAX
    pool = limit_xla_threads(settings.worker_xla_threads) if uses_jax else None
    rt = bootstrap(settings)
    install_signal_handlers(rt)
    try:
        w = Worker(
            rt, threads=threads, with_relay=relay, batch_threads=batch_threads, solver=solver
        )
    except SubscribeCancelled:  # stopped before the broker accepted the subscriptions
        rt.close()
        _leave()
    w.start()
    pool_note = f", XLA CPU pool of {pool} thread(s)" if pool else ""
    typer.echo(f"worker consuming with {threads} threads{pool_note}")
    rt.stop_event.wait()
    w.join()
    rt.close()
    _leave()


@app.command()
def relay() -> None:
    """Publish outbox rows to Pulsar until stopped; also runs the order sweeper (timeouts of
    unacknowledged orders, overdue settlements, stalled rebalance requests), as the worker does
    when it runs the relay itself (several sweepers may run side by side)."""
    import threading

    from rebalancer.adapters.outbox_relay import OutboxRelay
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.entrypoints.sweeper import OrderSweeper

    rt = bootstrap(_settings())
    install_signal_handlers(rt)
    r = OutboxRelay(rt.engine, rt.publisher, rt.settings.outbox_batch_size)
    sweeper = OrderSweeper.from_settings(rt.engine, rt.settings)
    sweeping = threading.Thread(
        target=sweeper.run, args=(rt.stop_event,), name="order-sweeper", daemon=True
    )
    sweeping.start()
    typer.echo("outbox relay running")
    r.run(rt.stop_event)
    sweeping.join(15)
    rt.close()
    _leave()


@app.command()
def simulate(
    days: int = typer.Option(5, help="Trading days to publish."),
    interval: float = typer.Option(2.0, help="Seconds between trading days."),
    seed: int = typer.Option(7, help="Seed of the sample book (its instruments and prices)."),
) -> None:
    """Run the simulated market-data feed, execution venue and settlement agent."""
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.entrypoints.simulate import Counterparties
    from rebalancer.sample_book import build_sample_book

    rt = bootstrap(_settings(), upgrade_schema=False)
    install_signal_handlers(rt)
    book = build_sample_book(seed=seed)
    sim = Counterparties(
        rt,
        book.price_feed(seed=3),
        settlement_days={i.id: i.settlement_days for i in book.instruments.values()},
    )
    sim.start()
    try:
        for _ in range(days):
            if rt.stop_event.is_set():
                break
            data = sim.step_market()
            typer.echo(f"published market data for {data.as_of} ({len(data.bars)} bars)")
            time.sleep(interval)
        sim.end_of_day()
    finally:
        rt.stop_event.set()
        sim.join()
        rt.close()
    _leave()


@app.command("execution-quality")
def execution_quality_report(
    tenant: str = typer.Option(..., help="Tenant whose orders are reported."),
    start: str = typer.Option("", help="First day (YYYY-MM-DD, UTC); default 30 days ago."),
    end: str = typer.Option("", help="Last day (YYYY-MM-DD, UTC); default today."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Implementation shortfall, slippage vs the cost estimate, fill rate and completion."""
    from rebalancer.entrypoints.reports import print_execution_quality

    print_execution_quality(_settings(), tenant, start, end, as_json=as_json)


@app.command()
def backtest(
    start: str = typer.Option("2020-01-02", help="First date (YYYY-MM-DD), 1991 to 2022."),
    end: str = typer.Option("2020-12-31", help="Last date (YYYY-MM-DD), at most 2022-12-28."),
    accounts: int = typer.Option(
        4, min=1, help="Accounts of the sample book (4: the default run, under a minute)."
    ),
    policies: str = typer.Option(
        "never,monthly,quarterly,band-abs-5,band-rel-25,optimizer",
        help="Comma-separated: never, monthly, quarterly, band-abs-<pct>, band-rel-<pct>, "
        "optimizer, optimizer@<risk aversion>.",
    ),
    bands: str = typer.Option("2.5,10", help="Extra absolute band widths (%) for the frontier."),
    output: str = typer.Option("backtest-out", help="Directory of the report and tables."),
    workers: int = typer.Option(2, min=1, help="Processes."),
    seed: int = typer.Option(7, help="Seed of the sample book and simulated bond prices."),
    fast: bool = typer.Option(
        False, "--fast/--no-fast", help="Optimizer's JAX fast path first (conic fallback)."
    ),
) -> None:
    """Replay real S&P 500 history under several rebalancing policies; write an HTML report,
    Parquet files and a DuckDB database."""
    from datetime import date
    from pathlib import Path

    import polars as pl
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rebalancer.backtest import BacktestConfig, save_results
    from rebalancer.backtest.runner import prepare, run_job, work_items

    try:
        cfg = BacktestConfig(
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            accounts=accounts,
            policies=tuple(p for p in policies.split(",") if p.strip()),
            frontier_bands=tuple(float(b) / 100 for b in bands.split(",") if b.strip()),
            workers=workers,
            seed=seed,
            fast=fast,
        )
        cfg.policy_specs()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console()
    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("loading prices and the sample book", total=None)
        job = prepare(cfg)
        total = len(work_items(job))
        bar.update(task, total=total, description=f"replaying {len(job.policies)} policies")

        def advance(item: str) -> None:
            bar.advance(task)
            if not console.is_terminal:  # no live bar: one line per finished work item
                done = int(bar.tasks[0].completed)
                console.print(f"{done}/{total} work items ({item} done) "
                              f"{time.perf_counter() - t0:.0f} s", soft_wrap=True)  # fmt: skip

        result = run_job(job, cfg, advance)
    report = save_results(result, Path(output))
    show = result.metrics.select(
        "policy", "avg_drift", "cost_bps", "taxes_paid", "after_tax_return",
        "wash_sale_violations", "wash_sale_violations_after_impact", "share_optimal",
        "failed_decisions",
    )  # fmt: skip
    with pl.Config(tbl_width_chars=160, tbl_hide_column_data_types=True):
        console.print(str(show), soft_wrap=True)
    console.print(f"report: {report} ({time.perf_counter() - t0:.0f} s)", soft_wrap=True)


@app.command()
def calendar(
    now: str = typer.Option("", help="Evaluate at this ISO time (default: the clock, UTC)."),
    loop: bool = typer.Option(False, "--loop", help="Run again every --interval seconds."),
    interval: float = typer.Option(60.0, help="Seconds between runs with --loop."),
) -> None:
    """Scheduler step: fire the due calendar triggers (each account, schedule and period at most
    once, also with several schedulers running; the state is in the database)."""
    from datetime import UTC, datetime

    from rebalancer.adapters import migrate
    from rebalancer.adapters.db import make_engine
    from rebalancer.bootstrap import start_infrastructure
    from rebalancer.service_layer.handlers.monitoring import run_calendar
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    s = _settings().model_copy(update={"pulsar_url": _settings().pulsar_url or "pulsar://unused:1"})
    infra = start_infrastructure(s)
    engine = make_engine(infra.database_url, s)
    try:
        migrate.upgrade(engine)
        while True:
            at = datetime.fromisoformat(now) if now else datetime.now(UTC)
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            with UnitOfWork(engine, "scheduler") as uow:
                fired = run_calendar(uow, at)
            typer.echo(f"{at.isoformat()}: {len(fired)} calendar trigger(s) fired")
            for f in fired:
                typer.echo(f"  {f['tenant_id']}/{f['account_id']} {f['period_keys']}")
            if not loop:
                break
            time.sleep(interval)
    finally:
        engine.dispose()
        infra.stop()


def _register_batch_commands() -> None:
    from rebalancer.entrypoints.cli_batch import approve_batch, cancel_batch, load_book, rebalance

    app.command("load-book")(load_book)
    app.command("rebalance")(rebalance)
    app.command("approve-batch")(approve_batch)
    app.command("cancel-batch")(cancel_batch)


_register_batch_commands()


def main() -> None:  # pragma: no cover
    app(prog_name="rebalancer")


if __name__ == "__main__":  # pragma: no cover
    main()
