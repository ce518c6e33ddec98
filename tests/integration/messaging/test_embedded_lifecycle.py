"""Embedded servers: data survives a restart, a second process adopts without owning, and a
clean stop leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import psutil
import pulsar
import pytest
import sqlalchemy as sa

from rebalancer.adapters.embedded import EmbeddedPostgres, EmbeddedPulsar

pytestmark = pytest.mark.integration


def _processes_using(path: Path) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmd:
            out.append(proc)
    return out


def test_postgres_restart_reuses_data_and_stops_cleanly(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path)
    engine = sa.create_engine(pg.start())
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (v int)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
    engine.dispose()

    second = EmbeddedPostgres(tmp_path)  # e.g. `rebalancer worker` beside `rebalancer serve`
    second.start()
    assert not second.owned  # the first process is alive and owns the server
    second.stop()  # a non-owner never stops the server
    assert _processes_using(pg.pgdata)

    pg.stop()
    assert not _processes_using(pg.pgdata)

    again = EmbeddedPostgres(tmp_path)
    engine = sa.create_engine(again.start())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM kept")).scalar() == 42
    engine.dispose()
    again.stop()
    assert not _processes_using(again.pgdata)


def test_broker_restart_keeps_unacknowledged_messages(tmp_path: Path) -> None:
    broker = EmbeddedPulsar(tmp_path)
    url = broker.start()
    topic = "persistent://public/default/lifecycle"
    client = pulsar.Client(url)
    consumer = client.subscribe(topic, "s", consumer_type=pulsar.ConsumerType.Shared)
    client.create_producer(topic).send(b"survives")
    client.close()
    broker.stop()
    assert not _processes_using(broker.root)

    restarted = EmbeddedPulsar(tmp_path)
    client = pulsar.Client(restarted.start())  # a new port after restart: use the new URL
    consumer = client.subscribe(topic, "s", consumer_type=pulsar.ConsumerType.Shared)
    msg = consumer.receive(timeout_millis=10_000)
    assert msg.data() == b"survives"
    consumer.acknowledge(msg)
    client.close()
    restarted.stop()
    assert not _processes_using(restarted.root)
