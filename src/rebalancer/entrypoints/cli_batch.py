"""CLI commands of batch rebalancing: ``rebalancer load-book`` and ``rebalancer rebalance``.

Registered on the main ``rebalancer`` app in :mod:`rebalancer.entrypoints.cli`.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING

import typer

from rebalancer.config import get_settings

if TYPE_CHECKING:
    from rich.console import Console

    from rebalancer.bootstrap import Runtime


def load_book(
    accounts: int = typer.Option(10_000, "--accounts", min=1, help="Accounts to create."),
    instruments: int = typer.Option(50, help="Instruments of the model (all in every account)."),
    tenant: str = typer.Option("bench", help="Tenant owning the model and accounts."),
    prefix: str = typer.Option("S", help="Prefix making instrument, model and account ids unique."),
    seed: int = typer.Option(0, help="Seed of the synthetic book."),
) -> None:
    """Load a synthetic book (model, accounts, lots, cash, a year of prices, drift) with COPY."""
    from rebalancer.adapters import migrate
    from rebalancer.adapters.db import make_engine
    from rebalancer.adapters.repositories.bulk import load_scaled_book
    from rebalancer.bootstrap import start_infrastructure
    from rebalancer.domain.errors import RebalancerError
    from rebalancer.scaled_book import build_scaled_book

    s = get_settings()
    s = s.model_copy(update={"pulsar_url": s.pulsar_url or "pulsar://unused:1"})
    t0 = time.perf_counter()
    book = build_scaled_book(
        accounts, n_instruments=instruments, prefix=prefix, tenant_id=tenant, seed=seed
    )
    built = time.perf_counter() - t0
    infra = start_infrastructure(s)
    try:
        engine = make_engine(infra.database_url, s)
        migrate.upgrade(engine)
        try:
            with engine.begin() as conn:
                stats = load_scaled_book(conn, book)
        except RebalancerError as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(1) from exc
        finally:
            engine.dispose()
    finally:
        infra.stop()
    typer.echo(
        f"model {book.model.id!r} (tenant {tenant!r}): {stats.accounts} accounts, {stats.lots} "
        f"lots, {stats.prices} prices, {stats.drift_snapshots} drift snapshots; generated in "
        f"{built:.1f} s, written with COPY in {stats.seconds:.1f} s "
        f"({stats.rows / stats.seconds:,.0f} rows/s)"
    )


def rebalance(
    model: str = typer.Option(..., "--model", help="Rebalance every account following it."),
    tenant: str = typer.Option(..., help="Tenant owning the model."),
    reason: str = typer.Option("model_change", help="Reason recorded on each rebalance."),
    priority: int = typer.Option(0, min=0, max=100, help="Higher is served first."),
    supersede_pending: bool = typer.Option(
        False,
        "--supersede-pending",
        help="Reject recommendations still awaiting approval and recompute those accounts "
        "(otherwise they are skipped).",
    ),
    relay: bool = typer.Option(
        False, help="Also run the outbox relay here (when no `rebalancer relay` is running)."
    ),
    wait: bool = typer.Option(True, help="Show progress until the batch finishes."),
    poll: float = typer.Option(0.5, help="Seconds between progress polls."),
) -> None:
    """Start a batch rebalance and follow it with a progress bar (workers do the work)."""
    from rich.console import Console

    from rebalancer.adapters.outbox_relay import OutboxRelay
    from rebalancer.bootstrap import bootstrap, install_signal_handlers
    from rebalancer.service_layer.handlers.batch import start_batch
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    rt = bootstrap(get_settings())
    install_signal_handlers(rt)
    console = Console()
    relay_thread = None
    try:
        with UnitOfWork(rt.engine, tenant) as uow:
            started = start_batch(
                uow,
                model,
                actor="cli",
                reason=reason,
                priority=priority,
                supersede_pending=supersede_pending,
            )
            uow.commit()
        superseded = f", {started.superseded} superseded" if started.superseded else ""
        console.print(
            f"batch {started.batch_id}: {started.queued} of {started.total} accounts queued"
            f"{superseded}, {started.skipped} skipped (awaiting approval or trading)"
        )
        if relay:
            r = OutboxRelay(rt.engine, rt.publisher, rt.settings.outbox_batch_size)
            relay_thread = threading.Thread(target=r.run, args=(rt.stop_event,), daemon=True)
            relay_thread.start()
        if wait:
            _follow(rt, tenant, started.batch_id, started.queued, poll, console)
    finally:
        rt.stop_event.set()
        if relay_thread is not None:
            relay_thread.join(5)
        rt.close()


def _follow(
    rt: Runtime, tenant: str, batch_id: uuid.UUID, queued: int, poll: float, console: Console
) -> None:
    """Poll the batch and render a progress bar until it finishes (or Ctrl-C)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from rebalancer.service_layer.handlers.batch import batch_progress
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    columns = (
        TextColumn("[bold]rebalancing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} accounts/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("batch", total=queued, rate=0.0)
        while not rt.stop_event.is_set():
            with UnitOfWork(rt.engine, tenant) as uow:
                p = batch_progress(uow, batch_id)
            bar.update(task, completed=p["done"], rate=p["accounts_per_s"])
            if p["status"] == "finished":
                break
            rt.stop_event.wait(poll)
    table = Table(title=f"batch {batch_id}")
    table.add_column("status")
    table.add_column("accounts", justify="right")
    for status, n in sorted(p["counts"].items()):
        table.add_row(status, str(n))
    table.add_row("skipped", str(p["skipped"]))
    console.print(table)
    console.print(
        f"{p['done']} accounts in {p['elapsed_s']:.1f} s ({p['accounts_per_s']:.1f} accounts/s)"
    )


def cancel_batch(
    batch_id: str = typer.Argument(..., help="The batch to cancel."),
    tenant: str = typer.Option(..., help="Tenant owning the batch."),
    reject_pending: bool = typer.Option(
        False,
        "--reject-pending",
        help="Also reject its recommendations still awaiting approval.",
    ),
) -> None:
    """Cancel a batch rebalance: its accounts not computed yet are not rebalanced."""
    from rich.console import Console

    from rebalancer.bootstrap import bootstrap
    from rebalancer.domain.errors import RebalancerError
    from rebalancer.service_layer.handlers.batch import batch_progress
    from rebalancer.service_layer.handlers.batch import cancel_batch as cancel
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    bid = _batch_id(batch_id)
    rt = bootstrap(get_settings())
    try:
        with UnitOfWork(rt.engine, tenant) as uow:
            done = cancel(uow, bid, actor="cli", reject_pending=reject_pending)
            view = batch_progress(uow, bid)
            uow.commit()
    except RebalancerError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    finally:
        rt.close()
    Console().print(
        f"batch {bid}: {done.cancelled} not computed cancelled, {done.rejected} awaiting "
        f"approval rejected; now {view['status']} ({view['counts']})"
    )


def approve_batch(
    batch_id: str = typer.Argument(..., help="The batch whose recommendations to approve."),
    tenant: str = typer.Option(..., help="Tenant owning the batch."),
    chunk_size: int = typer.Option(
        100, min=1, max=500, help="Recommendations per transaction (shared instruments block)."
    ),
) -> None:
    """Approve every recommendation of a batch awaiting approval, chunk by chunk, with a
    progress bar (orders exactly once; run it again after an interruption)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from rebalancer.bootstrap import bootstrap
    from rebalancer.domain.errors import RebalancerError
    from rebalancer.service_layer.handlers.batch import approve_batch as approve
    from rebalancer.service_layer.handlers.batch import batch_progress
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    bid = _batch_id(batch_id)
    rt = bootstrap(get_settings())
    console = Console()
    approved = orders = 0
    try:
        with UnitOfWork(rt.engine, tenant) as uow:
            total = batch_progress(uow, bid)["counts"].get("pending_approval", 0)
        columns = (TextColumn("[bold]approving"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("approve", total=total, completed=approved)
            while not rt.stop_event.is_set():
                step = approve(
                    lambda: UnitOfWork(rt.engine, tenant),
                    bid,
                    actor="cli",
                    max_accounts=chunk_size,
                    chunk_size=chunk_size,
                )
                approved, orders = approved + step.approved, orders + step.orders
                bar.update(task, completed=approved, total=approved + step.remaining)
                if not step.approved or not step.remaining:
                    break
    except RebalancerError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    finally:
        rt.close()
    console.print(f"batch {bid}: {approved} recommendations approved, {orders} orders")


def _batch_id(text: str) -> uuid.UUID:
    """``text`` as a batch id, or exit 2 naming the problem."""
    try:
        return uuid.UUID(text)
    except ValueError:
        typer.echo(f"batch id {text!r} is not a UUID", err=True)
        raise typer.Exit(2) from None
