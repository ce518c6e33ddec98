"""``rebalancer load-book`` and ``rebalancer rebalance`` against the session's servers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from rebalancer.config import get_settings
from rebalancer.entrypoints.cli import app


@pytest.fixture
def cli_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REBALANCER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REBALANCER_PULSAR_URL", settings.pulsar_url)
    monkeypatch.setenv("REBALANCER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("REBALANCER_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("REBALANCER_LOG_JSON", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_load_book_then_rebalance_with_progress(runtime: Any, cli_env: None) -> None:
    from rebalancer.entrypoints.batch_worker import BatchConsumerLoop, BatchSolver

    prefix = f"C{uuid.uuid4().hex[:6].upper()}"
    runner = CliRunner()
    loaded = runner.invoke(
        app,
        ["load-book", "--accounts", "6", "--instruments", "6", "--tenant", "tenant-a",
         "--prefix", prefix],
    )  # fmt: skip
    assert loaded.exit_code == 0, loaded.output
    assert "6 accounts" in loaded.output and "COPY" in loaded.output
    stop = threading.Event()
    # the CLI is under test, not the solver: Clarabel spares a JIT compile (test_batch_solver
    # covers the fast default)
    loop = BatchConsumerLoop(runtime, chunk_size=3, name="cli-test", solver=BatchSolver.CLARABEL)
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    try:
        out = runner.invoke(
            app,
            ["rebalance", "--model", f"{prefix}-model", "--tenant", "tenant-a", "--relay",
             "--poll", "0.2"],
        )  # fmt: skip
    finally:
        stop.set()
        worker.join(30)
    assert out.exit_code == 0, out.output
    assert "6 of 6 accounts queued" in out.output
    assert "6 accounts in" in out.output and "accounts/s" in out.output
    # the recommendations now await approval: superseding them queues every account again
    superseding = runner.invoke(
        app,
        ["rebalance", "--model", f"{prefix}-model", "--tenant", "tenant-a", "--no-wait",
         "--supersede-pending"],
    )  # fmt: skip
    assert superseding.exit_code == 0, superseding.output
    line = " ".join(superseding.output.split())  # rich wraps at the terminal's width
    assert "6 of 6 accounts queued" in line and "0 skipped (awaiting approval or trading)" in line
    waiting = int(line.split(" superseded")[0].rsplit(", ", 1)[1])
    assert 0 < waiting <= 6  # the book's drift leaves recommendations to approve
    again = runner.invoke(
        app, ["load-book", "--accounts", "2", "--tenant", "tenant-a", "--prefix", prefix]
    )
    assert again.exit_code == 1 and "already exists" in again.output


def test_cancel_batch_from_the_command_line(runtime: Any, cli_env: None) -> None:
    from batchhelpers import load_book

    from rebalancer.service_layer.handlers.batch import start_batch
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    book, _ = load_book(runtime.engine, 2)
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        started = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    runner = CliRunner()
    args = ["cancel-batch", str(started.batch_id), "--tenant", "tenant-a", "--reject-pending"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    line = " ".join(out.output.split())
    assert "2 not computed cancelled, 0 awaiting approval rejected; now cancelled" in line
    missing = runner.invoke(app, ["cancel-batch", str(uuid.uuid4()), "--tenant", "tenant-b"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    bad = runner.invoke(app, ["cancel-batch", "not-a-uuid", "--tenant", "tenant-a"])
    assert bad.exit_code == 2 and "not a UUID" in bad.output


def test_approve_batch_from_the_command_line(runtime: Any, cli_env: None) -> None:
    from batchhelpers import computed_batch

    from rebalancer.service_layer.handlers.batch import batch_progress
    from rebalancer.service_layer.unit_of_work import UnitOfWork

    _, batch_id = computed_batch(runtime.engine, 5, n_instruments=12)
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        waiting = batch_progress(uow, batch_id)["counts"].get("pending_approval", 0)
    assert waiting > 0  # the book's drift leaves recommendations to approve
    runner = CliRunner()
    args = ["approve-batch", str(batch_id), "--tenant", "tenant-a", "--chunk-size", "2"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"{waiting} recommendations approved" in " ".join(out.output.split())
    with UnitOfWork(runtime.engine, "tenant-a") as uow:
        assert "pending_approval" not in batch_progress(uow, batch_id)["counts"]
    missing = runner.invoke(app, ["approve-batch", str(uuid.uuid4()), "--tenant", "tenant-a"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
