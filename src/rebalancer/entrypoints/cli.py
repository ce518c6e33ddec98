"""The ``rebalancer`` command line (typer)."""

from __future__ import annotations

import sys
import time

import typer

from rebalancer.config import Settings, get_settings

app = typer.Typer(help="rebalancer: keep investment portfolios on target.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    return get_settings()


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

    raise typer.Exit(run_demo(_settings(), once=once, days=days, seed=seed, accounts=accounts))


@app.command()
def serve(
    with_worker: bool = typer.Option(
        True, help="Also run consumers and the outbox relay in this process."
    ),
) -> None:
    """Serve the HTTP API (and, by default, the event consumers and outbox relay)."""
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.entrypoints.apiserver import ApiServer
    from rebalancer.entrypoints.consumers import Worker

    rt = bootstrap(_settings())
    install_signal_handlers(rt)
    server = ApiServer(rt)
    worker = Worker(rt) if with_worker else None
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


@app.command()
def worker(
    threads: int = typer.Option(2, help="Consumer threads on the Shared subscription."),
    relay: bool = typer.Option(False, help="Also run the outbox relay."),
) -> None:
    """Consume events (market data, reports, settlements, rebalance requests) until stopped."""
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.entrypoints.consumers import Worker

    rt = bootstrap(_settings())
    install_signal_handlers(rt)
    w = Worker(rt, threads=threads, with_relay=relay)
    w.start()
    typer.echo(f"worker consuming with {threads} threads")
    rt.stop_event.wait()
    w.join()
    rt.close()


@app.command()
def relay() -> None:
    """Publish outbox rows to Pulsar until stopped."""
    from rebalancer.adapters.outbox_relay import OutboxRelay
    from rebalancer.bootstrap import bootstrap, install_signal_handlers

    rt = bootstrap(_settings())
    install_signal_handlers(rt)
    r = OutboxRelay(rt.engine, rt.publisher, rt.settings.outbox_batch_size)
    typer.echo("outbox relay running")
    r.run(rt.stop_event)
    rt.close()


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


def main() -> None:  # pragma: no cover
    app(prog_name="rebalancer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
