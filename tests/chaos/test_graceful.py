"""Graceful shutdown: SIGTERM makes ``serve``, ``worker`` and ``relay`` finish what they hold and
exit 0; events a stopped worker had received but not handled are redelivered, so every event is
handled exactly once across the stop.

Each command runs as a subprocess on the session's PostgreSQL and pulsar-lite.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from chaos_cluster import Process, api_url, cli, service_env

from rebalancer.adapters.pulsar_bus import ConsumerLoop
from rebalancer.contracts import TOPICS, EventType, ModelChangedV1, encode, new_event
from rebalancer.entrypoints.consumers import handle_event, infrastructure_error

pytestmark = pytest.mark.integration

EVENTS = 400
SUBSCRIPTION = f"graceful-{uuid.uuid4().hex[:8]}"


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def spawn(settings: Any, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []
    env = service_env(
        settings.database_url, settings.pulsar_url, tmp_path, "k-" + uuid.uuid4().hex, "t"
    )
    env["REBALANCER_LOG_LEVEL"] = "INFO"
    # A subscription of its own: pulsar-lite refuses a second process's consumer whose id
    # collides with one already on the subscription (see docs/reliability.md).
    env["REBALANCER_SUBSCRIPTION"] = SUBSCRIPTION

    def make(name: str, *args: str) -> Process:
        p = Process(name, cli(*args), env, tmp_path, cwd=tmp_path)
        p.start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.kill()


def _processed(engine: sa.Engine, ids: list[uuid.UUID]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM processed_events WHERE event_id = ANY(:ids)"),
                {"ids": ids},
            ).scalar_one()
        )


def test_worker_sigterm_finishes_or_redelivers_in_flight_events(
    runtime: Any, engine: sa.Engine, spawn: Callable[..., Process]
) -> None:
    tenant = f"tenant-term-{uuid.uuid4().hex[:6]}"
    events = [
        new_event(
            EventType.MODEL_CHANGED,
            ModelChangedV1(model_id=f"m-{i}-{tenant}", version=1, targets={}, cash_target=1.0),
            tenant_id=tenant,
            key=f"m-{i}",
        )
        for i in range(EVENTS)
    ]
    ids = [e.event_id for e in events]
    worker = spawn("worker", "worker", "--threads", "2")
    _wait(lambda: "worker consuming" in worker.output(), "the worker to start")
    for e in events:
        runtime.publisher.publish(TOPICS[EventType.MODEL_CHANGED], e.key, encode(e))
    _wait(lambda: _processed(engine, ids) > 0, "the first events")
    assert worker.terminate(60) == 0, worker.output()[-3000:]
    out = worker.output()
    assert "runtime.signal" in out and "runtime.closed" in out
    assert "Traceback" not in out
    at_stop = _processed(engine, ids)

    # another consumer on the same Shared subscription takes whatever the worker left
    stop = threading.Event()
    loop = ConsumerLoop(
        runtime.client,
        runtime.publisher,
        [TOPICS[EventType.MODEL_CHANGED]],
        SUBSCRIPTION,
        lambda env: handle_event(runtime, env),
        is_transient=infrastructure_error,
    )
    t = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    t.start()
    try:
        _wait(lambda: _processed(engine, ids) == EVENTS, "every event to be handled")
    finally:
        stop.set()
        t.join(10)
    with engine.connect() as conn:
        versions = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT v.model_id) FROM model_versions v "
                "JOIN models m ON m.id = v.model_id WHERE m.tenant_id = :t"
            ),
            {"t": tenant},
        ).one()
    assert tuple(versions) == (EVENTS, EVENTS)  # each event's effect exactly once
    print(f"\nworker handled {at_stop} of {EVENTS} events before SIGTERM, the rest after")


@pytest.mark.parametrize(
    ("args", "ready"),
    [
        (("relay",), "outbox relay running"),
        (("serve", "--no-with-worker"), "API on http"),
        (("serve",), "API on http"),
    ],
)
def test_sigterm_exits_cleanly(
    spawn: Callable[..., Process], args: tuple[str, ...], ready: str
) -> None:
    p = spawn(args[0], *args)
    _wait(lambda: ready in p.output() or not p.alive(), f"{args} to start")
    if args[0] == "serve":
        import httpx

        url = api_url(p)
        assert url is not None
        assert httpx.get(url + "/readyz", timeout=30).json()["status"] == "ready"
    assert p.terminate(60) == 0, p.output()[-3000:]
    out = p.output()
    assert "runtime.closed" in out and "Traceback" not in out


def test_readiness_follows_the_database_through_a_crash(runtime: Any, tmp_path: Path) -> None:
    """/readyz is 503 naming the database while PostgreSQL is killed, and 200 again after it
    restarts (the pool replaces the broken connections by itself)."""
    import dataclasses

    from chaos_cluster import Postgres
    from fastapi.testclient import TestClient

    from rebalancer.adapters import migrate
    from rebalancer.adapters.db import make_engine
    from rebalancer.entrypoints.api import create_app

    pg = Postgres(tmp_path)
    engine = make_engine(pg.start())
    try:
        migrate.upgrade(engine)
        with TestClient(create_app(dataclasses.replace(runtime, engine=engine))) as c:
            first = c.get("/readyz")
            assert first.status_code == 200, first.text
            pg.kill()
            down = c.get("/readyz")
            assert down.status_code == 503, down.text
            assert not down.json()["database"]["ok"] and down.json()["broker"]["ok"]
            assert down.json()["database"]["error"]
            pg.start()
            up = c.get("/readyz")
            assert up.status_code == 200, up.text
    finally:
        engine.dispose()
        pg.stop()
