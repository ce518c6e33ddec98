"""Soak: a steady HTTP and event load on a locally started stack, for a chosen time.

Starts embedded PostgreSQL and pulsar-lite in a temporary directory, ``rebalancer serve
--no-with-worker`` and ``rebalancer worker --relay`` as separate processes, loads a sample book
over HTTP and publishes opening prices. Then, for ``--seconds``:

- ``--clients`` threads send requests at ``--rps`` in total (paced, not closed-loop): account
  reads, drift, order lists, rebalance requests (each of which flows outbox -> relay ->
  Pulsar -> worker -> optimizer);
- ``rebalancer simulate`` publishes a market day every ``--tick`` seconds (drift, alerts,
  triggers in the worker) and acts as venue and custodian, so approved orders fill and settle.

Reports throughput, latency percentiles per request kind, errors (5xx and transport errors;
4xx are counted apart), events handled, rebalance request -> recommendation latency, and the
resident memory of each process after warm-up and at the end. Writes the ``soak`` section of
docs/benchmarks.md.

Run: ``.venv/bin/python -m bench.soak --seconds 60``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import sqlalchemy as sa

from bench._report import markdown_table, write_section
from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine
from rebalancer.adapters.embedded import EmbeddedPostgres, EmbeddedPulsar
from rebalancer.adapters.pulsar_bus import Publisher, make_client
from rebalancer.contracts import TOPICS, EventType, MarketDataV1, encode, new_event
from rebalancer.entrypoints.demo import _book_payloads
from rebalancer.entrypoints.simulate import MARKET_TENANT
from rebalancer.sample_book import build_sample_book

API_KEY = "soak-key-0123456789"
TENANT = "soak"
KINDS = {"account": 0.4, "drift": 0.15, "orders": 0.15, "rebalance": 0.15, "approve": 0.15}


class Stack:
    """Embedded servers plus the API and worker processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = EmbeddedPostgres(root, database="soak")
        self.broker = EmbeddedPulsar(root)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = ""

    def start(self) -> None:
        db_url = self.pg.start()
        pulsar_url = self.broker.start()
        engine = make_engine(db_url)
        migrate.upgrade(engine)
        engine.dispose()
        env = {
            **os.environ,
            "REBALANCER_DATABASE_URL": db_url,
            "REBALANCER_PULSAR_URL": pulsar_url,
            "REBALANCER_DATA_DIR": str(self.root / "var"),
            "REBALANCER_API_KEYS": (
                f'[{{"key": "{API_KEY}", "tenant": "{TENANT}", '
                '"scopes": ["read", "trade", "approve", "admin"]}]'
            ),
            "REBALANCER_LOG_LEVEL": "WARNING",
            "REBALANCER_LOG_JSON": "false",
        }
        self.env = env
        cli = [sys.executable, "-m", "rebalancer.entrypoints.cli"]
        for name, args in (
            ("api", ["serve", "--no-with-worker"]),
            ("worker", ["worker", "--relay"]),
        ):
            out = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
            self.procs[name] = subprocess.Popen(
                [*cli, *args], env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 300
        while not self.url:
            m = re.search(r"API on (http://\S+)", (self.root / "api.log").read_text())
            if m:
                self.url = m.group(1)
            elif time.monotonic() > deadline or self.procs["api"].poll() is not None:
                raise RuntimeError((self.root / "api.log").read_text()[-2000:])
            time.sleep(0.2)
        while "worker consuming" not in (self.root / "worker.log").read_text():
            if time.monotonic() > deadline or self.procs["worker"].poll() is not None:
                raise RuntimeError((self.root / "worker.log").read_text()[-2000:])
            time.sleep(0.2)
        self.db_url, self.pulsar_url = db_url, pulsar_url

    def start_market(self, days: int, interval_s: float) -> None:
        """``rebalancer simulate``: market days every ``interval_s``, venue and custodian."""
        cli = [sys.executable, "-m", "rebalancer.entrypoints.cli", "simulate"]
        cli += ["--days", str(days), "--interval", str(interval_s)]
        out = open(self.root / "simulate.log", "wb")  # noqa: SIM115 - lives with the process
        self.procs["simulate"] = subprocess.Popen(
            cli, env=self.env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT
        )

    def processes(self) -> dict[str, list[psutil.Process]]:
        """OS processes per component (PostgreSQL: the postmaster and its backends)."""
        out = {name: [psutil.Process(p.pid)] for name, p in self.procs.items()}
        assert self.broker.proc is not None
        out["pulsar-lite"] = [psutil.Process(self.broker.proc.pid)]
        pid = int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        out["postgres"] = [master, *master.children(recursive=True)]
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.broker.stop()
        self.pg.stop()


def rss_mb(stack: Stack) -> dict[str, float]:
    out = {}
    for name, procs in stack.processes().items():
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        out[name] = total / 2**20
    return out


def load_book(client: httpx.Client, accounts: int) -> list[str]:
    book = build_sample_book(seed=7, n_accounts=accounts)
    instruments, models, accts = _book_payloads(book)
    for path, items in (
        ("/v1/instruments", instruments),
        ("/v1/models", models),
        ("/v1/accounts", accts),
    ):
        for item in items:
            r = client.post(path, json=item)
            if r.status_code not in (200, 201, 409):
                raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
    return [a["id"] for a in accts]


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    stack = Stack(root)
    try:
        stack.start()
        _soak(stack, args)
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def _soak(stack: Stack, args: argparse.Namespace) -> None:
    headers = {"X-API-Key": API_KEY}
    client = httpx.Client(base_url=stack.url, headers=headers, timeout=60)
    accounts = load_book(client, args.accounts)
    book = build_sample_book(seed=7, n_accounts=args.accounts)
    feed = book.price_feed(seed=3)
    pclient = make_client(stack.pulsar_url)
    publisher = Publisher(pclient)
    engine = make_engine(stack.db_url)

    def publish_prices(data: MarketDataV1) -> None:
        env = new_event(EventType.MARKET_DATA, data, tenant_id=MARKET_TENANT, key="market")
        publisher.publish(TOPICS[EventType.MARKET_DATA], "market", encode(env))

    opening = MarketDataV1(
        as_of=feed.as_of,
        bars=[{"instrument": i, "close": p} for i, p in feed.current_prices().items()],
    )
    publish_prices(opening)
    with engine.connect() as conn:
        deadline = time.monotonic() + 120
        while not conn.execute(sa.text("SELECT count(*) FROM prices")).scalar_one():
            if time.monotonic() > deadline:
                raise RuntimeError("opening prices were not stored")
            time.sleep(0.2)
            conn.rollback()

    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    client_errors: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    stop = threading.Event()
    interval = args.clients / args.rps
    rebalances: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        c = httpx.Client(base_url=stack.url, headers=headers, timeout=60)
        next_at = time.monotonic() + rng.uniform(0, interval)
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            next_at += interval
            kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            acct = rng.choice(accounts)
            t0 = time.perf_counter()
            try:
                if kind == "account":
                    r = c.get(f"/v1/accounts/{acct}")
                elif kind == "drift":
                    r = c.get(f"/v1/accounts/{acct}/drift")
                elif kind == "orders":
                    r = c.get("/v1/orders", params={"account_id": acct})
                elif kind == "rebalance":
                    r = c.post(f"/v1/accounts/{acct}/rebalance")
                    if r.status_code == 202:
                        with lock:
                            rebalances.append(r.json()["rebalance_id"])
                else:  # look at a rebalance; approve its recommendation if it waits for it
                    with lock:
                        rid = rng.choice(rebalances) if rebalances else None
                    if rid is None:
                        continue
                    r = c.get(f"/v1/rebalances/{rid}")
                    body = r.json() if r.status_code == 200 else {}
                    if body.get("recommendation_status") == "pending_approval":
                        rec = body["recommendation_id"]
                        t0 = time.perf_counter()
                        r = c.post(f"/v1/recommendations/{rec}/approve")
                    else:
                        kind = "rebalance status"
                code = r.status_code
            except httpx.HTTPError:
                code = 0
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                lat[kind].append(ms)
                if code == 0 or code >= 500:
                    errors[kind] += 1
                elif code >= 400:
                    client_errors[kind] += 1
        c.close()

    def processed() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM processed_events")).scalar_one())

    stack.start_market(int(args.seconds / args.tick) + 1, args.tick)
    deadline = time.monotonic() + 300
    while "published market data" not in (stack.root / "simulate.log").read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the simulator did not start")
        time.sleep(0.2)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)]
    t_start = time.monotonic()
    events_before = processed()
    for t in threads:
        t.start()
    warm = min(10.0, args.seconds / 5)
    time.sleep(warm)
    mem_start = rss_mb(stack)
    mem_peak = dict(mem_start)
    while time.monotonic() - t_start < args.seconds:
        for k, v in rss_mb(stack).items():
            mem_peak[k] = max(mem_peak[k], v)
        time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t_start
    mem_end = rss_mb(stack)
    events = processed() - events_before
    with engine.connect() as conn:
        fills = conn.execute(
            sa.text("SELECT count(*) FROM executions WHERE fill_quantity > 0")
        ).scalar_one()
        rec_lat = [
            float(r[0])
            for r in conn.execute(
                sa.text(
                    "SELECT extract(epoch FROM c.created_at - r.created_at) * 1000 "
                    "FROM recommendations c JOIN rebalances r ON r.id = c.rebalance_id"
                )
            )
        ]
        backlog = conn.execute(
            sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        ).scalar_one()
    publisher.close()
    pclient.close()
    engine.dispose()
    client.close()
    _report(
        args, elapsed, lat, errors, client_errors, (events, fills), rec_lat, backlog,
        mem_start, mem_end, mem_peak,
    )  # fmt: skip


def _pct(values: list[float]) -> list[float]:
    if not values:
        return [float("nan")] * 4
    a = np.asarray(values)
    return [float(np.percentile(a, q)) for q in (50, 95, 99)] + [float(a.max())]


def _report(
    args: argparse.Namespace,
    elapsed: float,
    lat: dict[str, list[float]],
    errors: dict[str, int],
    client_errors: dict[str, int],
    flow_counts: tuple[int, int],
    rec_lat: list[float],
    backlog: int,
    mem_start: dict[str, float],
    mem_end: dict[str, float],
    mem_peak: dict[str, float],
) -> None:
    total = sum(len(v) for v in lat.values())
    rows: list[list[Any]] = [
        [kind, len(v), len(v) / elapsed, *_pct(v), errors[kind], client_errors[kind]]
        for kind, v in sorted(lat.items())
    ]
    everything = [x for v in lat.values() for x in v]
    rows.append(
        [
            "all",
            total,
            total / elapsed,
            *_pct(everything),
            sum(errors.values()),
            sum(client_errors.values()),
        ]
    )
    http = markdown_table(
        [
            "request",
            "count",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors (5xx/transport)",
            "4xx",
        ],
        rows,
    )
    rec = _pct(rec_lat)
    events, fills = flow_counts
    flow = markdown_table(
        [
            "events handled",
            "events/s",
            "fills",
            "recommendations",
            "request->recommendation p50 ms",
            "p95 ms",
            "p99 ms",
            "outbox backlog at end",
        ],
        [[events, events / elapsed, fills, len(rec_lat), rec[0], rec[1], rec[2], backlog]],
    )
    mem = markdown_table(
        ["process", "RSS after warm-up MB", "RSS at end MB", "peak MB", "growth MB"],
        [
            [k, mem_start[k], mem_end[k], mem_peak[k], mem_end[k] - mem_start[k]]
            for k in sorted(mem_start)
        ],
    )
    body = (
        f"{elapsed:.0f} s, {args.clients} clients at {args.rps} req/s in total, {args.accounts} "
        f"accounts, a market day every {args.tick:.0f} s from `rebalancer simulate` (also the "
        "venue and custodian: approved orders fill and settle); API, worker (with relay) and "
        "simulator are "
        "separate processes on embedded PostgreSQL and pulsar-lite. `approve` looks up a "
        "random earlier rebalance and approves its recommendation when one is pending.\n\n"
        f"{http}\n\n{flow}\n\n{mem}\n\n"
        "Memory growth over a short run mostly reflects warm caches (compiled optimizer problems, "
        "connection pools, PostgreSQL shared buffers); a leak shows as growth that keeps rising "
        "with `--seconds`."
    )
    write_section("soak", "Soak: steady HTTP and event load (bench/soak.py)", body)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="Duration of the load.")
    ap.add_argument("--rps", type=float, default=20.0, help="Requests per second, all clients.")
    ap.add_argument("--clients", type=int, default=4, help="Client threads.")
    ap.add_argument("--accounts", type=int, default=30, help="Accounts in the book.")
    ap.add_argument("--tick", type=float, default=10.0, help="Seconds between market days.")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
