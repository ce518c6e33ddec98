"""Benchmark the batch rebalance: N accounts of a 50-instrument model over 1 and 2 workers.

Run from the repo root::

    .venv/bin/python -m bench.batch --accounts 10000 --workers 1,2

Starts an embedded PostgreSQL and pulsar-lite in a temporary directory, loads a fresh synthetic
book per run with COPY (timed), starts ``rebalancer worker --threads 0`` processes (batch
consumer only), runs the outbox relay in this process, starts the batch and polls it until it
finishes. Wall time runs from the fan-out until the last recommendation is committed. Peak
memory per worker is the kernel's high-water mark (``VmHWM``) and the largest RSS sampled with
psutil. A last in-process run over a few chunks splits the time of a chunk by stage.
Writes the "batch" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from bench._report import markdown_table, write_section
from rebalancer.adapters import orm
from rebalancer.adapters.outbox_relay import OutboxRelay
from rebalancer.adapters.repositories.bulk import load_scaled_book
from rebalancer.bootstrap import Runtime, bootstrap
from rebalancer.config import Settings
from rebalancer.contracts import RebalanceTriggeredV1
from rebalancer.entrypoints.batch_worker import single_threaded_blas
from rebalancer.optimizer import Recommender
from rebalancer.optimizer.engine import FAST_CHAIN
from rebalancer.scaled_book import build_scaled_book
from rebalancer.service_layer.handlers.batch import batch_progress, recommend_chunk, start_batch
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "bench"


def _peak_kib(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid`` in KiB, 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Workers:
    """``rebalancer worker`` processes with only the batch consumer."""

    def __init__(self, rt: Runtime, root: Path, n: int, chunk: int) -> None:
        env = {
            **os.environ,
            "REBALANCER_DATABASE_URL": rt.infra.database_url,
            "REBALANCER_PULSAR_URL": rt.infra.pulsar_url,
            "REBALANCER_DATA_DIR": str(root),
            "REBALANCER_LOG_JSON": "false",
            "REBALANCER_LOG_LEVEL": "WARNING",
            "REBALANCER_BATCH_CHUNK_SIZE": str(chunk),
            "JAX_PLATFORMS": "cpu",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "REBALANCER_BATCH_ENGINE": os.environ.get("REBALANCER_BATCH_ENGINE", ""),
        }
        self.logs = [root / f"worker-{uuid.uuid4().hex[:6]}.log" for _ in range(n)]
        cmd = [sys.executable, "-m", "rebalancer.entrypoints.cli", "worker", "--threads", "0"]
        self.procs = [
            subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
            for log in self.logs
        ]
        self.ps = [psutil.Process(p.pid) for p in self.procs]
        self.max_rss = [0] * n

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all("worker consuming" in log.read_text(errors="ignore") for log in self.logs):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError("a worker did not start: " + self.logs[0].read_text()[-2000:])
            time.sleep(0.2)

    def sample(self) -> None:
        for i, p in enumerate(self.ps):
            with contextlib.suppress(psutil.Error):
                self.max_rss[i] = max(self.max_rss[i], p.memory_info().rss)

    def peaks_mib(self) -> list[float]:
        return [_peak_kib(p.pid) / 1024 for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _load(rt: Runtime, n: int, instruments: int, tag: str) -> tuple[str, Any]:
    book = build_scaled_book(
        n,
        n_instruments=instruments,
        prefix=f"{tag}{uuid.uuid4().hex[:4].upper()}",
        tenant_id=TENANT,
    )
    with rt.engine.begin() as conn:
        stats = load_scaled_book(conn, book)
    return book.model.id, stats


def run_batch(
    rt: Runtime, root: Path, n: int, instruments: int, n_workers: int, chunk: int, limit_s: float
) -> dict[str, Any]:
    """Load a fresh book, run one batch over ``n_workers`` processes; returns the measurements."""
    model_id, stats = _load(rt, n, instruments, f"W{n_workers}")
    workers = Workers(rt, root, n_workers, chunk)
    stop = threading.Event()
    relay = OutboxRelay(rt.engine, rt.publisher, 1000)
    relay_thread = threading.Thread(target=relay.run, args=(stop, 0.01), daemon=True)
    try:
        workers.wait_ready()
        relay_thread.start()
        t0 = time.perf_counter()
        with UnitOfWork(rt.engine, TENANT) as uow:
            batch = start_batch(uow, model_id, actor="bench")
            uow.commit()
        fanout_s = time.perf_counter() - t0
        while True:
            workers.sample()
            with UnitOfWork(rt.engine, TENANT) as uow:
                p = batch_progress(uow, batch.batch_id)
            if p["status"] == "finished" or time.perf_counter() - t0 > limit_s:
                break
            time.sleep(0.25)
        wall_s = time.perf_counter() - t0
        peaks = workers.peaks_mib()
    finally:
        stop.set()
        relay_thread.join(10) if relay_thread.is_alive() else None
        workers.stop()
    return {
        "workers": n_workers,
        "accounts": n,
        "done": p["done"],
        "finished": p["status"] == "finished",
        "failed": p["counts"].get("failed", 0),
        "load_s": stats.seconds,
        "load_rows_per_s": stats.rows / stats.seconds,
        "lots": stats.lots,
        "fanout_s": fanout_s,
        "wall_s": wall_s,
        "rate": p["done"] / wall_s,
        "peak_mib": peaks,
        "rss_mib": [r / 2**20 for r in workers.max_rss],
    }


def stage_breakdown(rt: Runtime, n: int, instruments: int, chunk: int) -> dict[str, float]:
    """Seconds per stage over ``n`` accounts computed in this process in chunks of ``chunk``."""
    model_id, _ = _load(rt, n, instruments, "P")
    with UnitOfWork(rt.engine, TENANT) as uow:
        batch = start_batch(uow, model_id, actor="bench")
        uow.commit()
    r = orm.rebalances
    with rt.engine.connect() as conn:
        rows = conn.execute(
            sa.select(r.c.id, r.c.account_id).where(r.c.batch_id == batch.batch_id)
        ).all()
    items = [
        (
            uuid.uuid4(),
            RebalanceTriggeredV1(
                account_id=a, rebalance_id=str(i), reasons=["bench"], as_of="2024-06-28"
            ),
        )  # type: ignore[arg-type]
        for i, a in rows
    ]
    single_threaded_blas()
    fast = os.environ.get("REBALANCER_BATCH_ENGINE") == "fast"
    engine, totals = Recommender(solvers=FAST_CHAIN) if fast else Recommender(), {}
    for k in range(0, len(items), chunk):
        with UnitOfWork(rt.engine, TENANT) as uow:
            res = recommend_chunk(uow, engine, items[k : k + chunk])
        for stage, s in res.seconds.items():
            totals[stage] = totals.get(stage, 0.0) + s
    return totals


def load_and_fan_out(rt: Runtime, n: int, instruments: int) -> None:
    """Time the bulk paths alone: generate, COPY-load and fan out ``n`` accounts."""
    t0 = time.perf_counter()
    book = build_scaled_book(
        n, n_instruments=instruments, prefix=f"L{uuid.uuid4().hex[:4].upper()}", tenant_id=TENANT
    )
    built = time.perf_counter() - t0
    with rt.engine.begin() as conn:
        stats = load_scaled_book(conn, book)
    t1 = time.perf_counter()
    with UnitOfWork(rt.engine, TENANT) as uow:
        batch = start_batch(uow, book.model.id, actor="bench")
        uow.commit()
    fanout = time.perf_counter() - t1
    with rt.engine.connect() as conn:
        queued = conn.execute(
            sa.select(sa.func.count()).where(orm.outbox.c.published_at.is_(None))
        ).scalar_one()
    table = markdown_table(
        ["accounts", "lots", "prices", "drift snapshots", "generate s", "COPY s", "COPY rows/s",
         "fan-out s", "rebalances queued", "outbox rows"],
        [[f"{n:,}", f"{stats.lots:,}", f"{stats.prices:,}", f"{stats.drift_snapshots:,}",
          f"{built:.1f}", f"{stats.seconds:.1f}", f"{stats.rows / stats.seconds:,.0f}",
          f"{fanout:.1f}", f"{batch.queued:,}", f"{queued:,}"]],
    )  # fmt: skip
    body = (
        f"{table}\n\n'fan-out' is `start_batch` for every account of the model in one "
        "transaction (lock the followers, insert the rebalances and a batch item plus a status "
        "event per account in the outbox), as `POST /v1/models/{id}/rebalance` runs it."
    )
    write_section("bulk", "Bulk paths: COPY load and batch fan-out", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--instruments", type=int, default=50)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--chunk", type=int, default=16, help="accounts per chunk")
    ap.add_argument("--limit", type=float, default=1800.0, help="give up a run after seconds")
    ap.add_argument("--profile-accounts", type=int, default=96)
    ap.add_argument("--section", default="batch", help="section of docs/benchmarks.md")
    ap.add_argument(
        "--load-only",
        action="store_true",
        help="only time generating, COPY-loading and fanning out --accounts (no workers)",
    )
    ap.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="fast: the JAX fast path first (REBALANCER_BATCH_ENGINE=fast)",
    )
    args = ap.parse_args()
    os.environ["REBALANCER_BATCH_ENGINE"] = args.engine
    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    settings = Settings(data_dir=root, log_json=False, log_level="WARNING")
    rt = bootstrap(settings)
    if args.load_only:
        try:
            load_and_fan_out(rt, args.accounts, args.instruments)
        finally:
            rt.close()
        return
    try:
        runs = [
            run_batch(rt, root, args.accounts, args.instruments, int(w), args.chunk, args.limit)
            for w in args.workers.split(",")
        ]
        stages = stage_breakdown(rt, args.profile_accounts, args.instruments, args.chunk)
    finally:
        rt.close()
    report(args, runs, stages)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], stages: dict[str, float]) -> None:
    base = next((r["wall_s"] for r in runs if r["workers"] == 1 and r["finished"]), None)
    rows = [
        [
            r["workers"],
            f"{r['done']:,} / {r['accounts']:,}" + ("" if r["finished"] else " (stopped)"),
            r["failed"],
            f"{r['fanout_s']:.1f}",
            f"{r['wall_s']:.1f}",
            f"{r['rate']:.1f}",
            f"{base / r['wall_s']:.2f}x" if base and r["finished"] else "",
            " / ".join(f"{m:.0f}" for m in r["peak_mib"]),
            " / ".join(f"{m:.0f}" for m in r["rss_mib"]),
        ]
        for r in runs
    ]
    table = markdown_table(
        [
            "workers",
            "accounts done",
            "failed",
            "fan-out s",
            "wall s",
            "accounts/s",
            "speed-up vs 1",
            "peak RSS MiB per worker (VmHWM)",
            "max RSS sampled (psutil)",
        ],
        rows,
    )
    load = markdown_table(
        ["run", "accounts", "lots", "COPY s", "rows/s"],
        [
            [f"{r['workers']} worker(s)", f"{r['accounts']:,}", f"{r['lots']:,}",
             f"{r['load_s']:.1f}", f"{r['load_rows_per_s']:,.0f}"]
            for r in runs
        ],
    )  # fmt: skip
    total = sum(stages.values()) or 1.0
    n = args.profile_accounts
    prof = markdown_table(
        ["stage", "ms per account", "share"],
        [[k, f"{1e3 * v / n:.1f}", f"{100 * v / total:.0f} %"] for k, v in stages.items()],
    )
    aim = 10_000 / (runs[-1]["rate"] or 1.0)
    body = (
        f"{args.accounts:,} accounts of {args.instruments} instruments (1-2 tax lots each), one "
        f"model, chunks of {args.chunk}; engine: "
        + (
            "CVXPY + Clarabel (`Recommender()`)"
            if args.engine == "default"
            else "JAX fast path first (`Recommender(solvers=FAST_CHAIN)`)"
        )
        + ", 2 shared "
        "cores, embedded PostgreSQL and pulsar-lite on the same machine.\n\n"
        f"{table}\n\nBulk load of each run's book (COPY of accounts, cash, sleeves, lots, "
        f"prices, drift snapshots):\n\n{load}\n\nWhere the time of a chunk goes ({n} accounts "
        f"computed in-process, chunks of {args.chunk}):\n\n{prof}\n\n"
        f"At the last run's rate 10,000 accounts take about {aim:,.0f} s."
    )
    write_section(
        args.section if args.engine == "default" else f"{args.section}-{args.engine}",
        f"Batch rebalance (POST /v1/models/{{id}}/rebalance): {args.accounts:,} accounts"
        + ("" if args.engine == "default" else ", JAX fast path"),
        body,
    )


if __name__ == "__main__":
    main()
