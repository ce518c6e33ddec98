"""PostgreSQL crashes and restarts under a running batch worker: nothing is lost, nothing is
dead-lettered, nothing is half-written.

The test runs its own embedded PostgreSQL (the session's database must stay up for the other
tests) and the session's pulsar-lite broker. The postmaster and its backends are SIGKILLed
(a machine crash, as far as the database can tell) while a ``rebalancer worker`` process is
computing chunks; the server is restarted on the same data directory (crash recovery) a few
seconds later. The worker retries the chunk in hand with backoff until the database is back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pulsar
import pytest
import sqlalchemy as sa
from batchhelpers import load_book, progress, recommendations_per_account, relay_running

from rebalancer.adapters import orm
from rebalancer.adapters.embedded import EmbeddedPostgres
from rebalancer.bootstrap import Runtime, bootstrap
from rebalancer.config import Settings
from rebalancer.contracts import EventType, dead_letter_topic
from rebalancer.service_layer.handlers.batch import BATCH_TOPIC, start_batch
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"
ACCOUNTS = 24


def _postmaster_pid(pg: EmbeddedPostgres) -> int | None:
    try:
        return int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def crash(pg: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster and every backend, and wait until they are gone."""
    pid = _postmaster_pid(pg)
    assert pid is not None, "PostgreSQL is not running"
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


def restart(pg: EmbeddedPostgres, url: str) -> None:
    """Start the server again on its data directory (the socket lock may linger a moment)."""
    for attempt in range(20):
        try:
            assert pg.start() == url, "PostgreSQL came back at another URL"
            return
        except Exception:
            if attempt == 19:
                raise
            time.sleep(0.5)


@pytest.fixture
def own_db(tmp_path: Path, settings: Any) -> Iterator[tuple[EmbeddedPostgres, Runtime]]:
    pg = EmbeddedPostgres(tmp_path / "db", database="outage")
    url = pg.start()
    rt = bootstrap(
        Settings(
            database_url=url,
            pulsar_url=settings.pulsar_url,
            data_dir=settings.data_dir,
            log_json=False,
            log_level="WARNING",
        )
    )
    try:
        yield pg, rt
    finally:
        rt.close()
        pg.owned = True
        with contextlib.suppress(Exception):
            pg.stop()
        with contextlib.suppress(Exception):
            crash(pg)


def _progress_or_none(rt: Runtime, batch_id: uuid.UUID) -> dict[str, Any] | None:
    try:
        return progress(rt.engine, TENANT, batch_id)
    except sa.exc.DBAPIError:  # the database is down or recovering
        return None


def _dead_letters_of(client: pulsar.Client, batch_id: uuid.UUID) -> int:
    """Messages of this batch on the batch topic's dead-letter topic."""
    reader = client.create_reader(dead_letter_topic(BATCH_TOPIC), pulsar.MessageId.earliest)
    n = 0
    try:
        while True:  # (pulsar-lite answers has_message_available of an empty topic with an error)
            try:
                msg = reader.read_next(timeout_millis=2000)
            except pulsar.Timeout:
                return n
            n += f"batch:{batch_id}".encode() in msg.data()
    finally:
        reader.close()


def test_database_restart_under_a_running_worker_loses_and_dead_letters_nothing(
    own_db: tuple[EmbeddedPostgres, Runtime], settings: Any, tmp_path: Path
) -> None:
    pg, rt = own_db
    url = pg.url
    book, _ = load_book(rt.engine, ACCOUNTS)
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "REBALANCER_DATABASE_URL": url,
        "REBALANCER_PULSAR_URL": settings.pulsar_url,
        "REBALANCER_DATA_DIR": str(settings.data_dir),
        "REBALANCER_LOG_JSON": "false",
        "REBALANCER_LOG_LEVEL": "WARNING",
        "REBALANCER_BATCH_CHUNK_SIZE": "3",
        # delivery is under test, not the solver: spare three JIT compiles on two busy cores
        "REBALANCER_BATCH_SOLVER": "clarabel",
        "REBALANCER_SUBSCRIPTION": f"batch-outage-{uuid.uuid4().hex[:8]}",
        "JAX_PLATFORMS": "cpu",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "rebalancer.entrypoints.cli", "worker", "--threads", "0"],
        env=env,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "worker consuming" not in log_path.read_text(errors="ignore"):
            assert worker.poll() is None, log_path.read_text(errors="ignore")[-3000:]
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.2)
        with relay_running(rt):
            with UnitOfWork(rt.engine, TENANT) as uow:
                batch = start_batch(uow, book.model.id, actor="test")
                uow.commit()
            while (p := progress(rt.engine, TENANT, batch.batch_id))["done"] < 3:
                assert time.monotonic() < deadline, f"the worker made no progress: {p}"
                time.sleep(0.05)
            assert p["status"] == "running", "the batch finished before the crash: make it larger"
            crash(pg)
            time.sleep(4.0)  # several retries of the chunk in hand fail meanwhile
            assert worker.poll() is None, "the worker died with the database"
            restart(pg, url)
            deadline = time.monotonic() + 180
            while True:
                p2 = _progress_or_none(rt, batch.batch_id)
                if p2 is not None and p2["status"] == "finished":
                    break
                assert worker.poll() is None, log_path.read_text(errors="ignore")[-3000:]
                assert time.monotonic() < deadline, f"batch not finished after the restart: {p2}"
                time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    log = log_path.read_text(errors="ignore")
    assert "batch.database_unavailable" in log, "the outage never reached the worker"
    assert "batch.dead_lettered" not in log and "batch.chunk_failed" not in log, log[-3000:]
    assert p2["done"] == ACCOUNTS and p2["counts"].get("failed", 0) == 0, p2
    assert recommendations_per_account(rt.engine, batch.batch_id) == {
        a[0]: 1 for a in book.accounts
    }
    assert _dead_letters_of(rt.client, batch.batch_id) == 0
    o = orm.outbox
    with rt.engine.connect() as conn:  # one event per result: no chunk was written twice
        created = conn.execute(
            sa.select(o.c.key, sa.func.count())
            .where(o.c.type == str(EventType.RECOMMENDATION_CREATED))
            .where(o.c.key.in_([a[0] for a in book.accounts]))
            .group_by(o.c.key)
        ).all()
    assert dict(created) == {a[0]: 1 for a in book.accounts}
