"""Poison events: bounded attempts, then the dead-letter topic with a reason; transient failures
retried without dead-lettering; ``dlq list`` / ``dlq replay`` (library and CLI).

Runs the real consumer loop and the service's real ``handle_event`` against the session's
pulsar-lite and PostgreSQL, each test on topics of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pulsar
import pytest
import sqlalchemy as sa

from rebalancer.adapters.pulsar_bus import ConsumerLoop
from rebalancer.contracts import (
    Envelope,
    EventType,
    ModelChangedV1,
    SettlementConfirmedV1,
    encode,
    new_event,
)
from rebalancer.entrypoints.consumers import handle_event, infrastructure_error
from rebalancer.entrypoints.dlq import list_dead_letters, replay

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[3] / "src"


def _topic() -> str:
    return f"persistent://public/default/test-poison-{uuid.uuid4().hex[:10]}"


class Harness:
    """A consumer loop on a topic of its own, run until a predicate holds."""

    def __init__(self, runtime: Any, handler: Callable[[Envelope], None]) -> None:
        self.rt = runtime
        self.topic = _topic()
        self.loop = ConsumerLoop(
            runtime.client,
            runtime.publisher,
            [self.topic],
            f"sub-{uuid.uuid4().hex[:8]}",
            handler,
            max_redeliveries=3,
            name="poison-test",
            is_transient=infrastructure_error,
            max_backoff_s=0.2,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def send(self, body: bytes, key: str = "k") -> None:
        self.rt.publisher.publish(self.topic, key, body)

    def wait(self, predicate: Callable[[], bool], timeout_s: float = 60) -> None:
        done = threading.Event()
        deadline = threading.Timer(timeout_s, done.set)
        deadline.start()
        try:
            while not predicate():
                if done.wait(0.05):
                    raise AssertionError(f"timed out; stats {self.loop.stats}")
        finally:
            deadline.cancel()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def harness(runtime: Any) -> Iterator[Callable[[Callable[[Envelope], None]], Harness]]:
    made: list[Harness] = []

    def make(handler: Callable[[Envelope], None]) -> Harness:
        h = Harness(runtime, handler)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _service(runtime: Any) -> Callable[[Envelope], None]:
    return lambda env: handle_event(runtime, env)


def _model_event(tenant: str) -> Envelope:
    payload = ModelChangedV1(
        model_id=f"m-{uuid.uuid4().hex[:8]}", version=1, targets={}, cash_target=1.0
    )
    return new_event(EventType.MODEL_CHANGED, payload, tenant_id=tenant, key=payload.model_id)


def test_malformed_bytes_are_dead_lettered_at_once(runtime: Any, harness: Any) -> None:
    h = harness(_service(runtime))
    h.send(b"\xff\xfenot json at all")
    h.wait(lambda: h.loop.stats.dead_lettered == 1)
    [letter] = list_dead_letters(runtime.client, [h.topic])
    assert letter.reason.startswith("malformed")
    assert letter.event_id is None and letter.original_topic == h.topic
    assert h.loop.stats.failed == 0  # no retries for what can never parse


def test_bad_payload_is_dead_lettered_naming_the_field(runtime: Any, harness: Any) -> None:
    h = harness(_service(runtime))
    env = _model_event("tenant-poison")
    body = json.loads(encode(env))
    body["payload"]["version"] = 0  # must be >= 1
    h.send(json.dumps(body).encode())
    h.wait(lambda: h.loop.stats.dead_lettered == 1)
    [letter] = list_dead_letters(runtime.client, [h.topic])
    assert letter.reason.startswith("malformed") and "version" in letter.reason
    assert letter.event_id == str(env.event_id) and letter.type == "model_changed"


def test_business_refusal_is_dead_lettered_at_once(runtime: Any, harness: Any) -> None:
    h = harness(_service(runtime))
    payload = SettlementConfirmedV1(
        settlement_id="s-1", report_id="r-1", order_id=str(uuid.uuid4()),
        account_id="acct-that-does-not-exist", instrument="AAPL", side="buy",
        quantity=Decimal(1), price=Decimal(10), trade_date=date(2024, 1, 2),
        settle_date=date(2024, 1, 3),
    )  # fmt: skip
    env = new_event(EventType.SETTLEMENT_CONFIRMED, payload, tenant_id="tenant-poison", key="x")
    h.send(encode(env))
    h.wait(lambda: h.loop.stats.dead_lettered == 1)
    [letter] = list_dead_letters(runtime.client, [h.topic])
    assert letter.reason.startswith("unprocessable: unknown_account")
    assert "acct-that-does-not-exist" in letter.reason
    assert h.loop.stats.failed == 0


def test_failing_handler_gets_bounded_attempts_then_dlq_then_replay(
    runtime: Any, harness: Any, engine: sa.Engine
) -> None:
    attempts: list[str] = []
    broken = threading.Event()
    broken.set()

    def handler(env: Envelope) -> None:
        attempts.append(str(env.event_id))
        if broken.is_set():
            raise RuntimeError("bug in a handler")
        handle_event(runtime, env)

    h = harness(handler)
    env = _model_event("tenant-poison")
    h.send(encode(env))
    h.wait(lambda: h.loop.stats.dead_lettered == 1)
    assert attempts == [str(env.event_id)] * 3  # max_redeliveries
    [letter] = list_dead_letters(runtime.client, [h.topic])
    assert letter.reason.startswith("unprocessable after 3 attempts") and "bug" in letter.reason
    # listing changed nothing; after the fix, replay delivers it once more and it is handled
    assert len(list_dead_letters(runtime.client, [h.topic])) == 1
    broken.clear()
    [replayed] = replay(runtime.client, runtime.publisher, [h.topic])
    assert replayed.event_id == str(env.event_id)
    h.wait(lambda: h.loop.stats.handled == 1)
    assert list_dead_letters(runtime.client, [h.topic]) == []
    with engine.connect() as conn:
        seen = conn.execute(
            sa.text("SELECT count(*) FROM processed_events WHERE event_id = :e"),
            {"e": env.event_id},
        ).scalar_one()
    assert seen == 1


def test_transient_errors_are_retried_not_dead_lettered(runtime: Any, harness: Any) -> None:
    calls: list[int] = []

    def handler(env: Envelope) -> None:
        calls.append(1)
        if len(calls) <= 4:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        if len(calls) == 5:
            raise pulsar.Timeout("broker away")  # type: ignore[call-arg]

    h = harness(handler)
    h.send(encode(_model_event("tenant-poison")))
    h.wait(lambda: h.loop.stats.handled == 1)
    assert len(calls) == 6
    assert h.loop.stats.transient_retries == 5
    assert h.loop.stats.dead_lettered == 0 and h.loop.stats.failed == 0


def test_dlq_cli_lists_and_replays(runtime: Any, harness: Any, settings: Any) -> None:
    h = harness(lambda env: (_ for _ in ()).throw(RuntimeError("always fails")))
    env = _model_event("tenant-poison")
    h.send(encode(env))
    h.wait(lambda: h.loop.stats.dead_lettered == 1)
    h.close()
    env_vars = {
        **os.environ,
        "REBALANCER_PULSAR_URL": settings.pulsar_url,
        "REBALANCER_DATABASE_URL": settings.database_url,
        "PYTHONPATH": str(SRC),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rebalancer.entrypoints.cli", "dlq", *args, "--topic", h.topic],
            env=env_vars, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip

    listed = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert [(d["event_id"], d["type"]) for d in listed] == [(str(env.event_id), "model_changed")]
    assert "always fails" in listed[0]["reason"]
    out = cli("replay", "--event-id", str(env.event_id))
    assert f"replayed {env.event_id}" in out.stdout
    assert list_dead_letters(runtime.client, [h.topic]) == []
