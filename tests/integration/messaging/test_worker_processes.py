"""Two ``rebalancer worker`` processes on the same Shared subscriptions of the service.

pulsar-lite keys the consumers of a subscription by consumer id, and every client numbers them
from 0: without host-unique ids (``SharedSubscriber``) the second process could not join. Here
both join, both handle events, each event has its effect once and none is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulsar
import pytest
import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.contracts import TOPICS, EventType, ModelChangedV1, encode, new_event
from rebalancer.entrypoints.consumers import SERVICE_CONSUMER, SERVICE_TYPES

pytestmark = pytest.mark.integration

TENANT = "tenant-a"
EVENTS = 40


class Workers:
    """``rebalancer worker`` processes (service consumers, no batch work) on one subscription."""

    def __init__(self, settings: Any, root: Path, subscription: str) -> None:
        self.env = {
            **os.environ,
            "REBALANCER_DATABASE_URL": settings.database_url,
            "REBALANCER_PULSAR_URL": settings.pulsar_url,
            "REBALANCER_DATA_DIR": str(settings.data_dir),  # shares the consumer slots
            "REBALANCER_LOG_JSON": "true",
            "REBALANCER_LOG_LEVEL": "DEBUG",
            "REBALANCER_SUBSCRIPTION": subscription,
            "JAX_PLATFORMS": "cpu",
        }
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        path = self.root / f"worker-{len(self.procs)}.log"
        self.logs.append(path)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "rebalancer.entrypoints.cli", "worker", "--threads", "2"],
                env=self.env,
                stdout=open(path, "wb"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
            )
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all("worker consuming" in p.read_text(errors="ignore") for p in self.logs):
            for proc, path in zip(self.procs, self.logs, strict=True):
                assert proc.poll() is None, path.read_text(errors="ignore")[-3000:]
            assert time.monotonic() < deadline, "a worker did not start in time"
            time.sleep(0.2)

    def handled(self) -> list[Counter[str]]:
        """Per process: event id -> times its handler ran to commit."""
        out = []
        for path in self.logs:
            seen: Counter[str] = Counter()
            for line in path.read_text(errors="ignore").splitlines():
                if '"event.handled"' not in line:
                    continue
                try:
                    seen[json.loads(line)["event_id"]] += 1
                except (ValueError, KeyError):
                    continue
            out.append(seen)
        return out

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


@pytest.fixture
def subscription(runtime: Any) -> str:
    """A fresh subscription on the service topics whose cursor starts at their end, so that the
    workers get this test's events and not the backlog other tests left on those topics."""
    name = f"two-workers-{uuid.uuid4().hex[:8]}"
    topics = sorted({TOPICS[t] for t in SERVICE_TYPES})
    consumer = runtime.client.subscribe(
        topics,
        name,
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Latest,
    )
    consumer.close()
    return name


@pytest.fixture
def workers(settings: Any, tmp_path: Path, subscription: str) -> Iterator[Workers]:
    w = Workers(settings, tmp_path, subscription)
    yield w
    w.stop()


def test_two_worker_processes_share_the_service_subscriptions(
    runtime: Any, workers: Workers
) -> None:
    instrument = f"TWO{uuid.uuid4().hex[:6].upper()}"
    with runtime.engine.begin() as conn:
        conn.execute(
            sa.insert(orm.instruments).values(id=instrument, asset_class="equity", sector="tech")
        )
    workers.start()
    workers.start()
    workers.wait_ready()
    if len(os.sched_getaffinity(0)) > 1:  # settings.worker_xla_threads: one by default
        for path in workers.logs:
            assert "XLA CPU pool of 1 thread(s)" in path.read_text(errors="ignore")
    model_ids = [f"two-{uuid.uuid4().hex[:10]}" for _ in range(EVENTS)]
    events = [
        new_event(
            EventType.MODEL_CHANGED,
            ModelChangedV1(model_id=m, version=1, targets={instrument: 0.9}, cash_target=0.1),
            tenant_id=TENANT,
            key=m,
        )
        for m in model_ids
    ]
    topic = TOPICS[EventType.MODEL_CHANGED]
    for env in events:
        runtime.publisher.publish(topic, env.key, encode(env))
    for env in events[:10]:  # redelivered copies (at-least-once): no second effect
        runtime.publisher.publish(topic, env.key, encode(env))
    ids = {str(e.event_id) for e in events}
    deadline = time.monotonic() + 120
    while True:
        with runtime.engine.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.count()).where(
                    orm.processed_events.c.consumer == SERVICE_CONSUMER,
                    orm.processed_events.c.event_id.in_([e.event_id for e in events]),
                )
            ).scalar_one()
        if done == EVENTS:
            break
        for proc, path in zip(workers.procs, workers.logs, strict=True):
            assert proc.poll() is None, path.read_text(errors="ignore")[-3000:]
        assert time.monotonic() < deadline, f"only {done} of {EVENTS} events handled"
        time.sleep(0.2)
    time.sleep(1.0)  # let the duplicates arrive too: they must not add an effect
    per_process = workers.handled()
    mine = [Counter({k: n for k, n in seen.items() if k in ids}) for seen in per_process]
    assert all(sum(seen.values()) > 0 for seen in mine), f"a worker handled nothing: {mine}"
    total = sum(mine, Counter())
    assert set(total) == ids, "an event was lost"
    assert max(total.values()) == 1, "an event had its effect twice"
    with runtime.engine.connect() as conn:
        versions = dict(
            conn.execute(
                sa.select(orm.models.c.id, orm.models.c.current_version).where(
                    orm.models.c.id.in_(model_ids)
                )
            ).all()
        )
    assert versions == {m: 1 for m in model_ids}
