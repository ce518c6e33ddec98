"""``rebalancer demo``: the whole loop on embedded defaults, driven through HTTP and Pulsar.

Load a sample book -> publish prices -> drift -> triggers -> recommendations -> approve over
HTTP -> orders to the simulated venue -> fills -> settlement -> lots and cash updated, then a
summary. Every step uses the same service code paths a production deployment uses.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rebalancer.adapters.repositories.stats import BookStats
from rebalancer.bootstrap import Runtime, bootstrap, install_signal_handlers
from rebalancer.config import ApiKeySpec, Scope, Settings, SolverChain
from rebalancer.contracts import TOPICS, EventType, MarketDataV1, encode, new_event
from rebalancer.domain.rebalance import REBALANCE_TERMINAL
from rebalancer.entrypoints.apiserver import ApiServer
from rebalancer.entrypoints.consumers import Worker
from rebalancer.entrypoints.simulate import MARKET_TENANT, Counterparties
from rebalancer.sample_book import SampleBook, build_sample_book
from rebalancer.simulators.venue import SimulatedVenue

TERMINAL_REBALANCE = tuple(str(s) for s in REBALANCE_TERMINAL)


class DemoError(RuntimeError):
    """The demo could not finish a stage (the message says which and why)."""


@dataclass
class DemoResult:
    """What one demo cycle did (for the summary and for tests)."""

    rebalance_ids: list[uuid.UUID] = field(default_factory=list)
    approved: list[uuid.UUID] = field(default_factory=list)
    drift_before: dict[str, float] = field(default_factory=dict)
    drift_after: dict[str, float] = field(default_factory=dict)
    te_before: dict[str, float] = field(default_factory=dict)
    """Ex-ante tracking error to target (annual volatility) per account, before approval."""
    te_after: dict[str, float] = field(default_factory=dict)
    order_status: Counter[str] = field(default_factory=Counter)
    reject_reasons: Counter[str] = field(default_factory=Counter)
    fills: int = 0
    settlements: int = 0
    failed_settlements: int = 0
    unsettled_fills: int = 0
    estimated_cost: float = 0.0
    slippage_cost: float = 0.0
    realized_gain: float = 0.0
    traded_value: float = 0.0

    @property
    def all_orders_final(self) -> bool:
        return all(s in ("filled", "rejected", "cancelled", "expired") for s in self.order_status)


def wait_for(
    what: str, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.1
) -> None:
    """Poll ``predicate`` until it holds; raise :class:`DemoError` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def _book_payloads(book: SampleBook) -> tuple[list[dict[str, Any]], ...]:
    instruments = [
        {
            "id": i.id,
            "asset_class": i.asset_class,
            "sector": i.sector,
            "lot_size": i.lot_size,
            "wash_sale_group": i.wash_sale_group,
            "substitutes": list(i.substitutes),
            "settlement_days": i.settlement_days,
        }
        for i in book.instruments.values()
    ]
    models = [
        {
            "id": m.id,
            "name": m.name or m.id,
            "targets": dict(m.targets),
            "cash_target": m.cash_target,
        }
        for m in book.models.values()
    ]
    accounts = [
        {
            "id": a.id,
            "name": a.name or a.id,
            "household_id": a.household_id,
            "tax_type": str(a.tax_type),
            "cash": str(a.cash),
            "lots": [
                {
                    "lot_id": lot.lot_id,
                    "instrument": lot.instrument,
                    "quantity": str(lot.quantity),
                    "cost_basis": str(lot.cost_basis),
                    "acquired": lot.acquired.isoformat(),
                }
                for lot in a.lots
            ],
            "sleeves": [{"id": s.id, "model_id": s.model_id, "share": s.share} for s in a.sleeves],
        }
        for a in book.accounts
    ]
    return instruments, models, accounts


class Demo:
    """One demo run: servers, worker, counterparties and an HTTP client."""

    def __init__(
        self,
        rt: Runtime,
        api_key: str,
        *,
        days: int,
        seed: int,
        accounts: int,
        console: Console,
        tenant: str | None = None,
    ) -> None:
        self.rt = rt
        self.console = console
        self.days = days
        self.book = build_sample_book(seed=seed, n_accounts=accounts)
        self.tenant = tenant or self.book.tenant_id  # the API key's tenant owns what it creates
        self.instrument_ids = sorted(self.book.instruments)
        self.stats = BookStats(rt.engine)
        self.server = ApiServer(rt)
        self.worker = Worker(rt, threads=2, with_relay=True)
        self.api_key = api_key
        self.client: httpx.Client | None = None
        self.sim: Counterparties | None = None

    # ------------------------------------------------------------------ plumbing
    def http(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http().request(method, path, **kw)
        if r.status_code >= 400:
            raise DemoError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def start(self) -> None:
        self.server.start()
        self.client = httpx.Client(
            base_url=self.server.url, timeout=120, headers={"X-API-Key": self.api_key}
        )
        self.worker.start()

    def stop(self) -> None:
        self.rt.stop_event.set()
        if self.client is not None:
            self.client.close()
        self.server.stop()
        self.worker.join()
        if self.sim is not None:
            self.sim.join()

    # ------------------------------------------------------------------ stages
    def load_book(self) -> int:
        """Create instruments, models and accounts over HTTP (existing ones are kept)."""
        instruments, models, accounts = _book_payloads(self.book)
        for body in instruments:
            if self.http().get(f"/v1/instruments/{body['id']}").status_code == 404:
                self.call("POST", "/v1/instruments", json=body)
        for body in models:
            if self.http().get(f"/v1/models/{body['id']}").status_code == 404:
                self.call("POST", "/v1/models", json=body)
        created = 0
        for body in accounts:
            if self.http().get(f"/v1/accounts/{body['id']}").status_code == 404:
                self.call("POST", "/v1/accounts", json=body)
                created += 1
        return created

    def start_market(self) -> None:
        """Start the counterparties; publish the opening prices if none are stored yet."""
        last = self.stats.latest_price_date(self.instrument_ids)
        start = last if last is not None and last > self.book.start_date else self.book.start_date
        feed = self.book.price_feed(seed=3) if start == self.book.start_date else None
        if feed is None:
            from rebalancer.simulators.market import PriceFeed

            feed = PriceFeed(
                self.book.instruments,
                start,
                seed=3,
                initial_prices={k: v[0] for k, v in self.book.simulated.items()},
                daily_volatility={k: v[1] for k, v in self.book.simulated.items()},
            )
        venue = SimulatedVenue(
            seed=21,
            reject_probability=0.02,
            partial_fill_probability=0.25,
            stall_probability=0.05,
            slippage_bps=4.0,
        )
        self.sim = Counterparties(
            self.rt,
            feed,
            venue,
            settlement_days={i.id: i.settlement_days for i in self.book.instruments.values()},
        )
        venue._clock = self.sim._venue_time  # the venue runs on the market's trading date
        self.sim.start()
        if last is None:
            opening = MarketDataV1(
                as_of=feed.as_of,
                bars=[{"instrument": i, "close": p} for i, p in feed.current_prices().items()],
            )
            env = new_event(EventType.MARKET_DATA, opening, tenant_id=MARKET_TENANT, key="market")
            self.rt.publisher.publish(TOPICS[EventType.MARKET_DATA], "market", encode(env))
            wait_for(
                "opening prices to be stored",
                lambda: self.stats.latest_price_date(self.instrument_ids) == feed.as_of,
                120,
            )

    def settle_pending(self) -> None:
        """Wait until every requested rebalance has its recommendation."""
        wait_for(
            "recommendations",
            lambda: (
                not self.stats.rebalances(self.tenant, ["requested"])
                and self.stats.outbox_backlog() == 0
            ),
            600,
            0.2,
        )

    def market_day(self) -> None:
        assert self.sim is not None
        data = self.sim.step_market()
        wait_for(
            f"prices of {data.as_of}",
            lambda: self.stats.latest_price_date(self.instrument_ids) == data.as_of,
            120,
        )
        self.settle_pending()

    def approve_all(self, result: DemoResult) -> None:
        pending = self.stats.rebalances(self.tenant, ["pending_approval"])
        recs = {r.rebalance_id: r for r in self.stats.recommendations([p.id for p in pending])}
        for reb in pending:
            rec = recs[reb.id]
            drift = self.call("GET", f"/v1/accounts/{reb.account_id}/drift")
            result.drift_before[reb.account_id] = float(
                drift["summaries"]["instrument"]["turnover"]
            )
            result.te_before[reb.account_id] = float(drift.get("tracking_error") or 0.0)
            self.call(
                "POST",
                f"/v1/recommendations/{rec.id}/approve",
                headers={"Idempotency-Key": f"demo-approve-{rec.id}"},
            )
            result.approved.append(reb.id)

    def finish_trading(self, result: DemoResult) -> None:
        assert self.sim is not None
        ids = result.approved
        if not ids:
            return

        def open_orders() -> int:
            recs = [r.id for r in self.stats.recommendations(ids)]
            return sum(
                o.status in ("new", "sent", "partially_filled", "cancel_requested")
                for o in self.stats.orders(recs)
            )

        deadline = time.monotonic() + 300
        while open_orders() > 0:
            if time.monotonic() > deadline:
                raise DemoError(f"{open_orders()} orders still open after 300 s")
            try:
                wait_for("orders to finish", lambda: open_orders() == 0, 5, 0.2)
            except DemoError:
                # Resting remainders (and buys sent once the sells finished) expire at the close.
                self.sim.end_of_day()
        wait_for(
            "every fill to settle",
            lambda: all(s in TERMINAL_REBALANCE for s in self.stats.rebalances_by_status(ids)),
            120,
            0.2,
        )

    def summarize(self, result: DemoResult) -> None:
        recs = self.stats.recommendations(result.approved)
        orders = self.stats.orders([r.id for r in recs])
        fills = self.stats.fills([o.id for o in orders])
        settlements = self.stats.settlements([o.id for o in orders])
        by_order = {o.id: o for o in orders}
        result.order_status = Counter(o.status for o in orders)
        result.reject_reasons = Counter(
            o.reason or "no reason"
            for o in orders
            if o.status in ("rejected", "expired", "cancelled")
        )
        result.fills = len(fills)
        result.settlements = sum(s.status == "settled" for s in settlements)
        result.failed_settlements = sum(s.status == "failed" for s in settlements)
        settled_reports = {s.report_id for s in settlements}
        result.unsettled_fills = sum(f.report_id not in settled_reports for f in fills)
        for f in fills:
            o = by_order[f.order_id]
            sign = 1 if o.side == "buy" else -1
            px, arrival = Decimal(f.fill_price), Decimal(o.arrival_price or f.fill_price)
            result.slippage_cost += float(sign * (px - arrival) * Decimal(f.fill_quantity))
            result.traded_value += float(px * Decimal(f.fill_quantity))
        for r in recs:
            obj = r.response["objective"]
            result.estimated_cost += obj["spread_and_fees_currency"] + obj["impact_currency"]
        gains = self.stats.realized_gains([s.id for s in settlements])
        result.realized_gain = float(sum(Decimal(g.gain) for g in gains))
        for r in recs:
            drift = self.call("GET", f"/v1/accounts/{r.account_id}/drift")
            result.drift_after[r.account_id] = float(drift["summaries"]["instrument"]["turnover"])
            result.te_after[r.account_id] = float(drift.get("tracking_error") or 0.0)

    def run_cycle(self, progress: Progress) -> DemoResult:
        result = DemoResult()
        stages: list[tuple[str, Callable[[], Any]]] = [
            ("load the sample book over HTTP", self.load_book),
            ("publish opening prices", self.start_market),
            ("first drift evaluation and recommendations", self.settle_pending),
        ]
        stages += [
            (f"market day {d + 1}: prices -> drift -> triggers -> recommendations", self.market_day)
            for d in range(self.days)
        ]
        stages += [
            ("approve recommendations over HTTP", lambda: self.approve_all(result)),
            ("execute at the venue and settle", lambda: self.finish_trading(result)),
            ("summarize", lambda: self.summarize(result)),
        ]
        task = progress.add_task("demo", total=len(stages))
        for label, fn in stages:
            progress.update(task, description=label)
            fn()
            progress.advance(task)
        return result


def print_summary(console: Console, result: DemoResult) -> None:
    n = len(result.approved)
    before = sum(result.drift_before.values()) / max(n, 1)
    after = sum(result.drift_after[a] for a in result.drift_before) / max(n, 1)
    t = Table(title="rebalancer demo: one cycle")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("accounts rebalanced", str(n))
    t.add_row("mean drift before (one-way turnover to target)", f"{before:.2%}")
    t.add_row("mean drift after settlement", f"{after:.2%}")
    te_b = sum(result.te_before.values()) / max(n, 1)
    te_a = sum(result.te_after.get(a, 0.0) for a in result.te_before) / max(n, 1)
    t.add_row("mean ex-ante tracking error before -> after", f"{te_b:.2%} -> {te_a:.2%}")
    t.add_row("orders", str(sum(result.order_status.values())))
    for status, count in sorted(result.order_status.items()):
        t.add_row(f"  {status}", str(count))
    t.add_row("fills", str(result.fills))
    t.add_row(
        "fills settled / failed / unsettled",
        f"{result.settlements} / {result.failed_settlements} / {result.unsettled_fills}",
    )
    t.add_row("traded value (USD)", f"{result.traded_value:,.0f}")
    t.add_row("estimated spread + impact cost (USD)", f"{result.estimated_cost:,.2f}")
    t.add_row("realized slippage vs arrival (USD)", f"{result.slippage_cost:,.2f}")
    t.add_row("realized gains (USD)", f"{result.realized_gain:,.2f}")
    console.print(t)
    if result.reject_reasons:
        r = Table(title="orders not filled, with their reasons")
        r.add_column("reason")
        r.add_column("orders", justify="right")
        for reason, count in result.reject_reasons.most_common():
            r.add_row(reason, str(count))
        console.print(r)


def run_demo(
    settings: Settings, *, once: bool, days: int = 2, seed: int = 7, accounts: int = 50
) -> int:
    """Run the demo; returns the process exit code (0 when every order ended explicitly)."""
    console = Console(stderr=False)
    api_key = None
    if not settings.api_keys:
        api_key = "demo-" + secrets.token_urlsafe(16)
        settings = settings.model_copy(
            update={
                "api_keys": [
                    ApiKeySpec(key=api_key, tenant="demo", scopes=list(Scope), name="demo")
                ]
            }
        )
    else:
        api_key = settings.api_keys[0].key.get_secret_value()
    if "solver_chain" not in settings.model_fields_set:
        # A few minutes on accounts of 16-32 instruments: Clarabel answers those in tens of
        # milliseconds, while compiling the fast path's buckets (about 8 s of CPU each, six of
        # them for this book) competed with the simulated venue and left a third of the orders
        # unanswered in time. REBALANCER_SOLVER_CHAIN=fast runs the demo on the fast path.
        settings = settings.model_copy(update={"solver_chain": SolverChain.CLARABEL})
    rt = bootstrap(settings)
    install_signal_handlers(rt)
    tenant = next(k.tenant for k in settings.api_keys if k.key.get_secret_value() == api_key)
    demo = Demo(
        rt, api_key, days=days, seed=seed, accounts=accounts, console=console, tenant=tenant
    )
    code = 0
    try:
        demo.start()
        console.print(
            f"[bold]rebalancer demo[/bold]  database: "
            f"{'embedded' if rt.infra.postgres else 'external'} PostgreSQL, broker: "
            f"{'embedded pulsar-lite' if rt.infra.broker else rt.infra.pulsar_url}"
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            result = demo.run_cycle(progress)
        print_summary(console, result)
        if not result.all_orders_final or result.unsettled_fills:
            console.print("[red]some orders or fills did not reach a final state[/red]")
            code = 1
        if not once:
            console.print(f"\nAPI: {demo.server.url}/docs   (X-API-Key: {api_key})")
            console.print("Press Ctrl-C to stop.")
            rt.stop_event.wait()
    except DemoError as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        demo.stop()
        rt.close()
    return code
