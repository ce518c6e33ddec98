"""A batch over real ``rebalancer worker`` processes: two share it, one is killed mid-batch.

The killed worker's unacknowledged messages are redelivered by the broker to the others and its
uncommitted chunk left nothing behind, so every account ends with exactly one recommendation.

This used to stall on pulsar-lite about one run in three: the relay published the batch items
in producer batches, pulsar-lite charged a whole batch entry against the subscription's
aggregate permits (driving it negative) and kept that negative balance after the killed
consumer was gone, so it never dispatched again. Publishers now send one message per entry
(see ``Publisher`` in ``rebalancer.adapters.pulsar_bus``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from batchhelpers import (
    load_book,
    progress,
    recommendations_per_account,
    relay_running,
    wait_finished,
)

from rebalancer.adapters import orm
from rebalancer.service_layer.handlers.batch import start_batch
from rebalancer.service_layer.unit_of_work import UnitOfWork

TENANT = "tenant-a"


class WorkerProcs:
    """Starts ``rebalancer worker`` processes (batch consumer only) and always stops them."""

    def __init__(self, settings: Any, root: Path) -> None:
        self.env = {
            **os.environ,
            "REBALANCER_DATABASE_URL": settings.database_url,
            "REBALANCER_PULSAR_URL": settings.pulsar_url,
            "REBALANCER_DATA_DIR": str(settings.data_dir),  # shares consumer slots
            "REBALANCER_LOG_JSON": "false",
            "REBALANCER_LOG_LEVEL": "WARNING",
            "REBALANCER_BATCH_CHUNK_SIZE": "3",
            # delivery is under test, not the solver: spare three JIT compiles on two busy cores
            "REBALANCER_BATCH_SOLVER": "clarabel",
            # A subscription of their own: consumers left on the shared one by earlier tests of
            # this session must not hold messages that only these workers should get.
            "REBALANCER_SUBSCRIPTION": f"batch-kill-{uuid.uuid4().hex[:8]}",
            "JAX_PLATFORMS": "cpu",
        }
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.root / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "rebalancer.entrypoints.cli", "worker", "--threads", "0"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def workers(settings: Any, tmp_path: Path) -> Iterator[WorkerProcs]:
    w = WorkerProcs(settings, tmp_path)
    yield w
    w.stop()


def test_worker_killed_mid_batch_loses_nothing_and_writes_each_result_once(
    runtime: Any, workers: WorkerProcs
) -> None:
    book, _ = load_book(runtime.engine, 30)
    first = workers.start()
    workers.start()
    with relay_running(runtime):
        with UnitOfWork(runtime.engine, TENANT) as uow:
            batch = start_batch(uow, book.model.id, actor="test")
            uow.commit()
        assert batch.queued == 30
        deadline = time.monotonic() + 240  # two workers start and compile on 2 busy cores
        while (p := progress(runtime.engine, TENANT, batch.batch_id))["done"] < 3:
            assert time.monotonic() < deadline, f"workers made no progress: {p}"
            time.sleep(0.05)
        assert p["status"] == "running", "the batch finished before the kill: make it larger"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        workers.start()
        done = wait_finished(runtime.engine, TENANT, batch.batch_id, timeout_s=300)
    assert first.returncode == -signal.SIGKILL
    assert done["done"] == 30 and done["counts"].get("requested", 0) == 0
    assert done["counts"].get("failed", 0) == 0, done
    per_account = recommendations_per_account(runtime.engine, batch.batch_id)
    assert per_account == {a[0]: 1 for a in book.accounts}
    # three worker processes, one covariance: every recommendation references one stored row
    r, rec = orm.rebalances, orm.recommendations
    with runtime.engine.connect() as conn:
        refs = conn.execute(
            sa.select(rec.c.risk_model_id, sa.func.count())
            .join(r, r.c.id == rec.c.rebalance_id)
            .where(r.c.batch_id == batch.batch_id)
            .group_by(rec.c.risk_model_id)
        ).all()
        stored = conn.execute(
            sa.select(sa.func.count()).where(orm.risk_models.c.id == refs[0][0])
        ).scalar_one()
    assert len(refs) == 1 and refs[0][0] is not None and refs[0][1] == 30 and stored == 1
