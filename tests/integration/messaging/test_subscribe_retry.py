"""Subscribing survives a broker restart and the consumers a killed process leaves on pulsar-lite.

Real pulsar-lite brokers (one per test, restarted on the same port like a crashed embedded
broker), real consumer processes killed with SIGKILL. What is shown:

- a consumer created while the broker is down subscribes once it is back (each attempt logged),
  and a consumer subscribed before a broker crash receives again after it;
- a worker killed with deliveries still unread in its socket leaves its consumers registered
  on pulsar-lite (the broker sees a TCP reset); its successor in the same consumer slot starts
  after the dead ids and subscribes at once, and even when it asks for a dead id it retries
  with fresh ones instead of failing;
- a stop request ends the retries; a refused request (bad topic name) is not retried;
- a ``rebalancer worker`` process started while the broker is down logs each attempt (JSON),
  consumes once the broker is back, and exits 0 when stopped while it waits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulsar
import pytest
import structlog
from structlog.testing import capture_logs

from rebalancer.adapters.embedded import EmbeddedPulsar
from rebalancer.adapters.pulsar_subscribe import (
    SharedSubscriber,
    SubscribeCancelled,
    subscribe_error_kind,
)

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[3] / "src"


class Broker:
    """pulsar-lite in ``root`` that can be SIGKILLed and restarted on the same URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current = EmbeddedPulsar(root)
        self.url = self.current.start()

    def kill(self) -> None:
        assert self.current.proc is not None
        os.kill(self.current.proc.pid, signal.SIGKILL)
        self.current.proc.wait()

    def restart(self) -> None:
        self.current = EmbeddedPulsar(self.root)
        assert self.current.start() == self.url  # the previous port, so clients find it again

    def stop(self) -> None:
        self.current.owned = True
        self.current.stop()


@pytest.fixture(autouse=True)
def info_level_logs() -> Iterator[None]:
    """Let INFO events through (another test may have configured WARNING); restored after."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    yield
    structlog.configure(**saved)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    try:
        yield b
    finally:
        b.stop()


def _topics(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"persistent://public/default/subretry-{tag}-{i}" for i in range(n)]


def _subscribe(sub: SharedSubscriber, topics: list[str]) -> pulsar.Consumer:
    return sub.subscribe(
        topics,
        "workers",
        consumer_type=pulsar.ConsumerType.Shared,
        initial_position=pulsar.InitialPosition.Earliest,
    )


def _receive(consumer: pulsar.Consumer, want: bytes, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            msg = consumer.receive(500)
        except pulsar.Timeout:
            continue
        consumer.acknowledge(msg)
        if msg.data() == want:
            return True
    return False


def _send(url: str, topic: str, body: bytes) -> None:
    client = pulsar.Client(url, operation_timeout_seconds=30)
    try:
        client.create_producer(topic, batching_enabled=False).send(body)
    finally:
        client.close()


def test_subscribe_waits_for_a_restarting_broker_and_old_consumers_resume(
    broker: Broker, tmp_path: Path
) -> None:
    topics = _topics(3)
    running = SharedSubscriber(broker.url, tmp_path / "slots")
    before = _subscribe(running, topics)
    broker.kill()

    result: dict[str, object] = {}

    def late_starter() -> None:  # a worker (re)started while the broker is down
        sub = SharedSubscriber(broker.url, tmp_path / "slots", attempt_timeout_s=2)
        result["sub"] = sub
        result["consumer"] = _subscribe(sub, topics[:2])

    with capture_logs() as logs:
        t = threading.Thread(target=late_starter, daemon=True)
        t.start()
        time.sleep(3)  # a few attempts fail against the dead broker
        assert t.is_alive() and "consumer" not in result
        broker.restart()
        t.join(90)
    try:
        assert not t.is_alive(), "subscribe did not succeed after the broker came back"
        retries = [e for e in logs if e["event"] == "pulsar.subscribe_retry"]
        assert retries, logs
        assert {e["kind"] for e in retries} <= {"broker_unavailable", "timeout"}
        assert all(e["url"] == broker.url and e["slot"] == 1 for e in retries)
        assert retries[0]["attempt"] == 1 and retries[0]["what"] == "consumer-id burn"
        assert any(e["event"] == "pulsar.subscribed_after_retries" for e in logs)

        # the consumer from before the crash resumes: only it subscribes to topics[2]
        _send(broker.url, topics[2], b"for-the-old-one")
        assert _receive(before, b"for-the-old-one")
        before.close()
        # and the late one receives what is sent to the topics it joined
        late = result["consumer"]
        assert isinstance(late, pulsar.Consumer)
        _send(broker.url, topics[0], b"for-the-late-one")
        assert _receive(late, b"for-the-late-one")
    finally:
        running.close()
        sub = result.get("sub")
        if isinstance(sub, SharedSubscriber):
            sub.close()


CHILD = """
import sys, time
from pathlib import Path
import pulsar
from rebalancer.adapters.pulsar_subscribe import SharedSubscriber
url, slots, topics = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
sub = SharedSubscriber(url, slots)
sub.subscribe(topics, "workers", consumer_type=pulsar.ConsumerType.Shared,
              initial_position=pulsar.InitialPosition.Earliest, receiver_queue_size=100)
print("first_id", sub.first_id, flush=True)
time.sleep(600)
"""


def _ghost(broker: Broker, slots: Path, topics: list[str]) -> int:
    """Leave a consumer on pulsar-lite whose process is gone: subscribe in a child process,
    freeze it, let the broker push messages into its socket, SIGKILL it (a TCP reset).
    Returns the child's first consumer id."""
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, broker.url, str(slots), *topics],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("first_id"), line
        os.kill(child.pid, signal.SIGSTOP)
        client = pulsar.Client(broker.url)
        try:
            for topic in topics:
                producer = client.create_producer(topic, batching_enabled=False)
                for _ in range(100):
                    producer.send_async(b"x" * 2000, None)
                producer.flush()
        finally:
            client.close()
        time.sleep(0.5)
    finally:
        child.kill()
        child.wait()
    return int(line.split()[1])


def test_successor_of_a_killed_worker_skips_its_ids(broker: Broker, tmp_path: Path) -> None:
    topics = _topics(3)
    slots = tmp_path / "slots"
    dead_first = _ghost(broker, slots, topics)

    with capture_logs() as logs:
        sub = SharedSubscriber(broker.url, slots, attempt_timeout_s=2)
        try:
            assert sub.slot == 0 and dead_first == 0  # the same slot, freed by the kill
            assert sub.first_id == len(topics)  # starts after the dead process's ids
            consumer = _subscribe(sub, topics)
            assert not [e for e in logs if e["event"] == "pulsar.subscribe_retry"], logs
            _send(broker.url, topics[1], b"fresh")
            assert _receive(consumer, b"fresh")
        finally:
            sub.close()
    assert any(e["event"] == "pulsar.consumer_slot_reused" for e in logs)

    again = SharedSubscriber(broker.url, slots)  # after a clean close: back to the first id
    try:
        assert again.first_id == 0
    finally:
        again.close()


def test_a_refused_consumer_id_is_retried_with_fresh_ids(broker: Broker, tmp_path: Path) -> None:
    topics = _topics(2)
    slots = tmp_path / "slots"
    _ghost(broker, slots, topics)
    (slots / "consumer-slots" / "0.lock").write_text("")  # forget where the dead ids ended

    with capture_logs() as logs:
        sub = SharedSubscriber(broker.url, slots, attempt_timeout_s=2)
        try:
            assert sub.first_id == 0  # asks for the ids the dead consumer still holds
            consumer = _subscribe(sub, topics)
            _send(broker.url, topics[0], b"fresh")
            assert _receive(consumer, b"fresh")
        finally:
            sub.close()
    retries = [e for e in logs if e["event"] == "pulsar.subscribe_retry"]
    assert retries and all(e["kind"] in {"timeout", "consumer_id_taken"} for e in retries)
    assert all(e["retry_in_s"] <= 0.2 for e in retries)  # a fresh id needs no long pause
    done = [e for e in logs if e["event"] == "pulsar.subscribed_after_retries"]
    assert done and done[0]["attempts"] == len(retries) + 1


def test_stop_ends_the_retries_and_refusals_are_not_retried(broker: Broker, tmp_path: Path) -> None:
    sub = SharedSubscriber(broker.url, tmp_path / "slots", attempt_timeout_s=2)
    try:
        with capture_logs() as logs, pytest.raises(pulsar.PulsarException) as refused:
            sub.subscribe("bad://topic", "workers", consumer_type=pulsar.ConsumerType.Shared)
        assert subscribe_error_kind(refused.value) is None
        assert [e["event"] for e in logs] == ["pulsar.subscribe_refused"]

        broker.kill()
        sub.stop.set()
        with pytest.raises(SubscribeCancelled):
            _subscribe(sub, _topics(1))
    finally:
        sub.close()


def _start_worker(settings: Any, url: str, root: Path, name: str) -> tuple[Any, Path]:
    """``rebalancer worker`` (JSON logs at INFO) against ``url``; returns process and log."""
    env = {
        **os.environ,
        "REBALANCER_DATABASE_URL": settings.database_url,
        "REBALANCER_PULSAR_URL": url,
        "REBALANCER_DATA_DIR": str(root / "var"),
        "REBALANCER_LOG_JSON": "true",
        "REBALANCER_LOG_LEVEL": "INFO",
        "REBALANCER_SUBSCRIPTION": f"subretry-{uuid.uuid4().hex[:8]}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    log_path = root / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebalancer.entrypoints.cli", "worker", "--threads", "1"],
        env=env,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    return proc, log_path


def _events(log_path: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="ignore").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            out.append(json.loads(line))
    return out


def _wait(cond: Any, proc: Any, log_path: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc.poll() is None, f"worker exited: {log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: {log_path.read_text()[-3000:]}"
        time.sleep(0.2)


def test_worker_started_while_the_broker_is_down_waits_and_then_consumes(
    broker: Broker, settings: Any, tmp_path: Path
) -> None:
    broker.kill()
    proc, log_path = _start_worker(settings, broker.url, tmp_path, "waits")
    try:
        _wait(
            lambda: len(_events(log_path, "pulsar.subscribe_retry")) >= 2,
            proc,
            log_path,
            90,
            "no retries logged",
        )
        retries = _events(log_path, "pulsar.subscribe_retry")
        assert all(e["url"] == broker.url and e["level"] == "warning" for e in retries)
        assert {e["kind"] for e in retries} <= {"broker_unavailable", "timeout"}
        broker.restart()
        _wait(
            lambda: "worker consuming" in log_path.read_text(errors="ignore"),
            proc,
            log_path,
            120,
            "the worker did not start consuming after the broker came back",
        )
        assert _events(log_path, "pulsar.subscribed_after_retries")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log_path.read_text()[-3000:]


def test_worker_stopped_while_waiting_for_the_broker_exits_cleanly(
    broker: Broker, settings: Any, tmp_path: Path
) -> None:
    broker.kill()
    proc, log_path = _start_worker(settings, broker.url, tmp_path, "stopped")
    try:
        _wait(
            lambda: bool(_events(log_path, "pulsar.subscribe_retry")),
            proc,
            log_path,
            90,
            "no retries logged",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log_path.read_text()[-3000:]
    assert "worker consuming" not in log_path.read_text(errors="ignore")
