"""Benchmark event throughput: outbox rows -> relay -> Pulsar -> a Shared consumer.

Run from the repo root::

    .venv/bin/python -m bench.relay --events 20000

Starts an embedded PostgreSQL and pulsar-lite in a temporary directory. For each relay batch
size: queues N ``status_updated`` events (about 500 bytes each, the most frequent event of a
batch rebalance) with one multi-row insert, drains the outbox with :class:`OutboxRelay`
(claim ``FOR UPDATE SKIP LOCKED``, publish asynchronously, wait for every receipt, mark sent),
and receives them all on a Shared subscription. Each run uses its own topic. Writes the "relay"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pulsar

from bench._report import markdown_table, write_section
from rebalancer.adapters.outbox_relay import OutboxRelay
from rebalancer.adapters.repositories.bulk import add_outbox_many
from rebalancer.bootstrap import Runtime, bootstrap
from rebalancer.config import Settings
from rebalancer.contracts import EventType, StatusEntity, StatusUpdatedV1, encode, new_event


def queue_events(rt: Runtime, n: int, topic: str) -> tuple[float, int]:
    """Insert ``n`` events for ``topic``; returns (seconds, mean body bytes)."""
    events = [
        new_event(
            EventType.STATUS_UPDATED,
            StatusUpdatedV1(
                entity=StatusEntity.REBALANCE,
                entity_id=str(uuid.uuid4()),
                account_id=f"acct-{i:06d}",
                status="pending_approval",
                previous="requested",
            ),
            tenant_id="bench",
            key=f"acct-{i:06d}",
        )
        for i in range(n)
    ]
    size = sum(len(encode(e)) for e in events[:100]) // min(n, 100)
    t0 = time.perf_counter()
    with rt.engine.begin() as conn:
        add_outbox_many(conn, ((e, topic) for e in events))
    return time.perf_counter() - t0, size


def postgres_cpu_s(root: Path) -> float:
    """CPU seconds (user + system) of the embedded PostgreSQL under ``root`` so far: the
    postmaster, its reaped children and its live backends."""
    total = 0.0
    for p in psutil.process_iter(["cmdline"]):
        try:
            if not any(f"{root}/pgdata" in part for part in p.info["cmdline"] or []):
                continue
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for c in p.children():
                ct = c.cpu_times()
                total += ct.user + ct.system
        except psutil.Error:
            continue
    return total


def run(rt: Runtime, root: Path, n: int, batch_size: int) -> list[object]:
    topic = f"persistent://public/default/bench.relay-{uuid.uuid4().hex[:8]}"
    consumer = rt.client.subscribe(
        topic,
        "bench",
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
        receiver_queue_size=1000,
    )
    received, first_at, last_at, consumer_cpu_s = 0, 0.0, 0.0, 0.0
    done = threading.Event()

    def consume() -> None:
        nonlocal received, first_at, last_at, consumer_cpu_s
        start = time.thread_time()
        try:
            _consume()
        finally:
            consumer_cpu_s = time.thread_time() - start

    def _consume() -> None:
        nonlocal received, first_at, last_at
        while received < n:
            try:
                msg = consumer.receive(timeout_millis=200)
            except pulsar.Timeout:
                if done.is_set():
                    return
                continue
            consumer.acknowledge(msg)
            received += 1
            last_at = time.perf_counter()
            if received == 1:
                first_at = last_at

    insert_s, size = queue_events(rt, n, topic)
    relay = OutboxRelay(rt.engine, rt.publisher, batch_size)
    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    pg0, cpu0 = postgres_cpu_s(root), time.process_time()
    t0 = time.perf_counter()
    published = relay.drain(timeout_s=600)
    relay_s = time.perf_counter() - t0
    pg_cpu_s = postgres_cpu_s(root) - pg0
    reader.join(120)
    done.set()
    # this process's CPU (the relay thread and the client's I/O threads) minus the consumer's
    relay_cpu_s = time.process_time() - cpu0 - consumer_cpu_s
    consumer.close()
    end_to_end = (last_at - t0) if received else float("nan")
    return [
        batch_size,
        f"{n:,}",
        size,
        f"{n / insert_s:,.0f}",
        f"{published / relay_s:,.0f}",
        f"{received / end_to_end:,.0f}",
        f"{received:,}",
        f"{1e6 * relay_cpu_s / max(published, 1):.0f}",
        f"{1e6 * pg_cpu_s / max(published, 1):.0f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch-sizes", default="200,1000")
    ap.add_argument(
        "--no-doc",
        action="store_true",
        help="print the table only; leave docs/benchmarks.md alone (for iterating)",
    )
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    rt = bootstrap(Settings(data_dir=root, log_json=False, log_level="WARNING"))
    try:
        rows = [run(rt, root, args.events, int(b)) for b in args.batch_sizes.split(",")]
    finally:
        rt.close()
    table = markdown_table(
        [
            "relay batch",
            "events",
            "bytes/event",
            "outbox insert ev/s",
            "relay publish ev/s",
            "outbox -> consumer ev/s",
            "received",
            "relay CPU µs/event",
            "PostgreSQL CPU µs/event",
        ],
        rows,
    )
    body = (
        f"{table}\n\n'relay publish' is claim + publish + wait for receipts + mark sent, one "
        "relay thread; 'outbox -> consumer' runs from the start of the drain to the last message "
        "acknowledged by one Shared consumer. A 10,000-account batch moves about 40,000 events "
        "(an item and a `requested` status per account at fan-out, a `recommendation_created` "
        "and a status per account from the workers). 'relay CPU' is this process's CPU time "
        "while draining (the relay thread and the Pulsar client's threads, without the "
        "consumer's Python thread), 'PostgreSQL CPU' that of the whole server meanwhile."
    )
    if args.no_doc:
        print(body)
        return
    write_section("relay", "Event throughput: outbox relay and Pulsar", body)


if __name__ == "__main__":
    main()
