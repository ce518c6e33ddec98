"""The chaos run: a cluster of processes, a seeded monkey that SIGKILLs and restarts them, and a
driver that rebalances a sample book over HTTP meanwhile (retrying as any client would)."""

from __future__ import annotations

import contextlib
import json
import queue
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from chaos_cluster import Broker, Postgres, Process, api_url, cli, service_env

from rebalancer.adapters import migrate
from rebalancer.adapters.db import make_engine
from rebalancer.entrypoints.demo import _book_payloads
from rebalancer.sample_book import SampleBook, build_sample_book

TENANT = "chaos"
API_KEY = "chaos-" + uuid.uuid4().hex
OPEN_ORDER = ("new", "sent", "partially_filled", "cancel_requested")
SERVICES = ("api", "worker", "relay")
"""One worker process (two consumer threads on the Shared subscription): pulsar-lite 0.2.0 keys a
subscription's consumers by the client-chosen consumer id, so two client processes (whose ids
both start at 0) cannot share one subscription ("Consumer 0 already exists"); real Apache Pulsar
scopes the ids per connection. See docs/reliability.md."""
TARGETS = (*SERVICES, "broker", "postgres")
READY = {
    "api": "API on http",
    "worker": "worker consuming",
    "relay": "outbox relay running",
}
"""What each service prints once it is up."""
READY_TIMEOUT_S = 240.0


def read_fills(path: Path) -> list[dict[str, Any]]:
    """The venue's fill log (a line being written is skipped)."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


class ChaosError(RuntimeError):
    """The run could not reach a state it waits for (the message says which)."""


@dataclass
class RunLog:
    """What the driver and the monkey did, for the invariants and the report."""

    kills: Counter[str] = field(default_factory=Counter)
    self_restarts: Counter[str] = field(default_factory=Counter)
    approvals: dict[str, list[str]] = field(default_factory=dict)
    """recommendation id -> ids of the orders the approval response listed."""
    http_retries: int = 0
    market_days: int = 0


class Cluster:
    """Processes, database access and HTTP access of one chaos run.

    Parameters
    ----------
    root
        Temporary directory for data and logs.
    seed
        Seed of the monkey (which process, when) and of the sample book.
    accounts
        Accounts in the book.
    """

    def __init__(self, root: Path, seed: int, accounts: int) -> None:
        self.root = root
        self.seed = seed
        self.accounts = accounts
        self.book: SampleBook = build_sample_book(seed=7, n_accounts=accounts)
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.fills_path = root / "venue-fills.jsonl"
        self.pg = Postgres(root)
        self.broker = Broker(root)
        self.procs: dict[str, Process] = {}
        self.engine: sa.Engine | None = None
        self.log = RunLog()
        self._lines: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()  # one monkey action or watchdog restart at a time
        self.monkey_done = threading.Event()
        self.monkey_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        url = self.pg.start()
        self.broker.start()
        self.engine = make_engine(url)
        migrate.upgrade(self.engine)
        env = service_env(url, self.broker.url, self.root / "var", API_KEY, TENANT)
        sim_script = str(Path(__file__).with_name("chaos_sim.py"))
        argvs = {
            "api": cli("serve", "--no-with-worker"),
            "worker": cli("worker", "--threads", "2"),
            "relay": cli("relay"),
        }
        for name, argv in argvs.items():
            self.procs[name] = Process(name, argv, env, self.logs, cwd=self.root)
        sim_argv = [sys.executable, sim_script]
        sim_argv += ["--fills", str(self.fills_path), "--accounts", str(self.accounts)]
        self.sim = Process("sim", sim_argv, env, self.logs, cwd=self.root, stdin=True)
        for p in [*self.procs.values(), self.sim]:
            p.start()
        threading.Thread(target=self._read_sim, daemon=True).start()
        self.sim_wait("ready", 300)
        self._wait_api(300)

    def stop(self) -> None:
        """Stop everything (SIGTERM, then SIGKILL); safe to call twice."""
        with contextlib.suppress(Exception):
            if self.sim.alive():
                self.sim.stdin.write(b"quit\n")
                self.sim.stdin.flush()
        for p in [*self.procs.values(), getattr(self, "sim", None)]:
            if p is not None:
                p.terminate(20)
        self.broker.stop()
        if self.engine is not None:
            self.engine.dispose()
        self.pg.stop()

    # ------------------------------------------------------------------ simulator
    def _read_sim(self) -> None:
        for raw in self.sim.stdout:
            self._lines.put(raw.decode(errors="replace").strip())

    def sim_wait(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sim.alive():
                raise ChaosError(f"simulator: no {prefix!r} (log: {self.sim.output()[-2000:]})")
            try:
                line = self._lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line

    def sim_cmd(self, cmd: str, timeout_s: float = 120) -> str:
        self.sim.stdin.write(cmd.encode() + b"\n")
        self.sim.stdin.flush()
        return self.sim_wait(f"ok {cmd}", timeout_s)

    # ------------------------------------------------------------------ monkey
    def kill(self, target: str) -> None:
        if target == "broker":
            self.broker.kill()
        elif target == "postgres":
            self.pg.kill()
        else:
            self.procs[target].kill()
        self.log.kills[target] += 1

    def restart(self, target: str) -> None:
        if target == "broker":
            self.broker.start()
        elif target == "postgres":
            self.pg.start()
        else:
            self.procs[target].start()

    def watchdog(self) -> None:
        """Restart a service that exited by itself (e.g. it started while the DB was down)."""
        for name, p in self.procs.items():
            if not p.alive():
                self.log.self_restarts[name] += 1
                p.start()

    def ready(self) -> bool:
        """Every service process is up and has said so (a kill then interrupts real work)."""
        return all(p.alive() and READY[name] in p.output() for name, p in self.procs.items())

    def monkey(self, stop: threading.Event, rounds: int, gap_s: tuple[float, float]) -> None:
        """``rounds`` times, kill each target once in a seeded random order: wait until every
        process is ready, pause a random time, SIGKILL, restart after a random outage."""
        rng = random.Random(self.seed)
        try:
            for _ in range(rounds):
                plan = list(TARGETS)
                rng.shuffle(plan)
                for target in plan:
                    pause, outage = rng.uniform(*gap_s), rng.uniform(0.1, 1.5)
                    deadline = time.monotonic() + READY_TIMEOUT_S
                    while not self.ready():
                        if stop.is_set():
                            return
                        if time.monotonic() > deadline:
                            self.monkey_error = f"processes not ready: {self.status()}"
                            return
                        with self._lock:
                            self.watchdog()
                        stop.wait(0.3)
                    if stop.wait(pause):
                        return
                    with self._lock:
                        self.kill(target)
                        time.sleep(outage)
                        self.restart(target)
        finally:
            self.monkey_done.set()

    def status(self) -> dict[str, str]:
        return {
            n: ("ready" if READY[n] in p.output() else "starting") if p.alive() else "down"
            for n, p in self.procs.items()
        }

    def heal(self) -> None:
        """Make sure every process is up (after the monkey stopped)."""
        with self._lock:
            if self.broker.proc is None or self.broker.proc.poll() is not None:
                self.broker.start()
            self.watchdog()

    # ------------------------------------------------------------------ database
    def sql(self, query: str, timeout_s: float = 120, **params: Any) -> list[Any]:
        """Run a read query, retrying while the database is down."""
        assert self.engine is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.engine.connect() as conn:
                    return list(conn.execute(sa.text(query), params).all())
            except sa.exc.DBAPIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    # ------------------------------------------------------------------ HTTP
    def _wait_api(self, timeout_s: float = 300) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            url = api_url(self.procs["api"])
            if url is not None:
                return url
            if time.monotonic() > deadline:
                raise ChaosError(f"the API did not start: {self.procs['api'].output()[-2000:]}")
            time.sleep(0.2)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        idem: str | None = None,
        timeout_s: float = 300,
    ) -> tuple[int, Any]:
        """An API call retried (same Idempotency-Key) on connection errors and 5xx."""
        headers = {"X-API-Key": API_KEY}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                base = self._wait_api(timeout_s)
                r = httpx.request(method, base + path, json=body, headers=headers, timeout=30)
                if r.status_code < 500:
                    return r.status_code, r.json() if r.content else None
                err = f"{r.status_code}: {r.text[:300]}"
            except httpx.HTTPError as exc:
                err = repr(exc)
            self.log.http_retries += 1
            if time.monotonic() > deadline:
                raise ChaosError(f"{method} {path} kept failing: {err}")
            time.sleep(0.3)

    # ------------------------------------------------------------------ the work
    def load_book(self) -> None:
        instruments, models, accounts = _book_payloads(self.book)
        for path, items in (
            ("/v1/instruments", instruments),
            ("/v1/models", models),
            ("/v1/accounts", accounts),
        ):
            for item in items:
                code, out = self.call("POST", path, body=item, idem=f"load-{path}-{item['id']}")
                if code not in (200, 201, 409):
                    raise ChaosError(f"POST {path} {item['id']}: {code} {out}")

    def request_rebalances(self, round_no: int) -> None:
        for acct in self.book.accounts:
            path = f"/v1/accounts/{acct.id}/rebalance"
            code, out = self.call("POST", path, idem=f"rebalance-{round_no}-{acct.id}")
            if code != 202:
                raise ChaosError(f"POST {path}: {code} {out}")

    def approve_pending(self) -> int:
        rows = self.sql(
            "SELECT id FROM recommendations WHERE tenant_id = :t AND status = 'pending_approval'",
            t=TENANT,
        )
        done = 0
        for (rid,) in rows:
            path = f"/v1/recommendations/{rid}/approve"
            code, out = self.call("POST", path, idem=f"approve-{rid}")
            if code == 200:
                ids = [o["id"] for o in out["orders"]]
                previous = self.log.approvals.setdefault(str(rid), ids)
                if sorted(previous) != sorted(ids):
                    raise ChaosError(f"approving {rid} twice listed other orders")
                done += 1
            elif code not in (409, 422):  # superseded meanwhile, or nothing to trade
                raise ChaosError(f"POST {path}: {code} {out}")
        return done

    def open_orders(self) -> int:
        rows = self.sql(
            "SELECT count(*) FROM orders WHERE tenant_id = :t AND status = ANY(:s)",
            t=TENANT,
            s=list(OPEN_ORDER),
        )
        return int(rows[0][0])

    def quiet(self) -> dict[str, int]:
        """Counters that are all zero once the system has finished its work."""
        fills = {f["report_id"] for f in read_fills(self.fills_path)}
        settled = {
            r[0]
            for r in self.sql("SELECT report_id FROM settlements WHERE tenant_id = :t", t=TENANT)
        }
        return {
            "requested_rebalances": int(
                self.sql(
                    "SELECT count(*) FROM rebalances WHERE tenant_id = :t AND status = 'requested'",
                    t=TENANT,
                )[0][0]
            ),
            "open_orders": self.open_orders(),
            "outbox_backlog": int(
                self.sql("SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
            ),
            "unsettled_fills": len(fills - settled),
        }
