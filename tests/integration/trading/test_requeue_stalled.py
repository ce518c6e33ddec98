"""A requested rebalance whose trigger was stranded in the broker is triggered again.

pulsar-lite keeps the unacknowledged messages of a consumer whose process was SIGKILLed
mid-delivery until the broker restarts (docs/reliability.md); the sweeper publishes the trigger
of a rebalance left ``requested`` and untouched again. Real embedded PostgreSQL; a stranded
trigger is simulated by ageing the rebalance's ``updated_at``.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from tradehelpers import make_book, rows

from rebalancer.adapters import orm
from rebalancer.config import Settings
from rebalancer.entrypoints.sweeper import OrderSweeper
from rebalancer.optimizer.engine import Recommender
from rebalancer.service_layer.handlers import recommending
from rebalancer.service_layer.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration


def _age(engine: Any, rid: uuid.UUID, by: timedelta) -> None:
    """Move the rebalance's creation, last change and last publication ``by`` into the past."""
    then = sa.func.now() - by
    with engine.begin() as conn:
        conn.execute(
            sa.update(orm.rebalances)
            .where(orm.rebalances.c.id == rid)
            .values(created_at=then, updated_at=then, published_at=then)
        )


def _triggers(engine: Any, rid: uuid.UUID) -> list[Any]:
    """``rebalance_triggered`` outbox rows of rebalance ``rid``, oldest first."""
    out = []
    with engine.connect() as conn:
        for row in conn.execute(
            sa.select(orm.outbox)
            .where(orm.outbox.c.type == "rebalance_triggered")
            .order_by(orm.outbox.c.id)
        ):
            if json.loads(row.body)["payload"]["rebalance_id"] == str(rid):
                out.append(row)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(engine: Any, book: Any, account: str) -> uuid.UUID:
    with UnitOfWork(engine, book.tenant) as uow:
        rid, new = recommending.request_rebalance(uow, account, ["drift"], 2)
    assert new
    return rid


def test_a_stalled_request_is_triggered_again_once_per_timeout(engine: Any) -> None:
    book = make_book(engine, n_accounts=2)
    stalled = _request(engine, book, book.accounts[0])
    fresh = _request(engine, book, book.accounts[1])
    _age(engine, stalled, timedelta(minutes=10))
    (first,) = _triggers(engine, stalled)

    with UnitOfWork(engine, book.tenant) as uow:
        again = recommending.requeue_stalled(uow, datetime.now(UTC) - timedelta(minutes=5))
    assert again == [stalled]  # the fresh request is left alone
    assert len(_triggers(engine, fresh)) == 1
    original, requeued = _triggers(engine, stalled)
    assert original.event_id == first.event_id
    assert requeued.event_id != first.event_id
    body, old = json.loads(requeued.body), json.loads(first.body)
    assert body["payload"]["reasons"] == old["payload"]["reasons"] == ["drift"]
    assert body["payload"]["priority"] == 2
    assert requeued.key == book.accounts[0]

    # touched: not requeued again before another timeout has passed
    with UnitOfWork(engine, book.tenant) as uow:
        assert recommending.requeue_stalled(uow, datetime.now(UTC) - timedelta(minutes=5)) == []
    (reb,) = rows(engine, orm.rebalances, id=stalled)
    assert reb.status == "requested"
    assert datetime.now(UTC) - reb.published_at < timedelta(minutes=1)
    assert datetime.now(UTC) - reb.updated_at > timedelta(minutes=9)  # nothing else changed


def test_triggers_that_join_a_stalled_request_do_not_postpone_its_requeue(engine: Any) -> None:
    """Coalescing stamps ``updated_at`` (the reasons changed) but publishes nothing: an account
    whose drift breaches again within every timeout still gets its stranded trigger again."""
    book = make_book(engine, n_accounts=1)
    account = book.accounts[0]
    rid = _request(engine, book, account)
    _age(engine, rid, timedelta(minutes=10))
    with UnitOfWork(engine, book.tenant) as uow:  # a new breach joins the open rebalance
        joined, new = recommending.request_rebalance(uow, account, ["volatility"], 3)
    assert (joined, new) == (rid, False)
    (reb,) = rows(engine, orm.rebalances, id=rid)
    assert datetime.now(UTC) - reb.updated_at < timedelta(minutes=1)

    with UnitOfWork(engine, book.tenant) as uow:
        assert recommending.requeue_stalled(uow, datetime.now(UTC) - timedelta(minutes=5)) == [rid]
    _original, requeued = _triggers(engine, rid)
    payload = json.loads(requeued.body)["payload"]
    assert payload["reasons"] == ["drift", "volatility"]  # the merged request
    assert payload["priority"] == 3


def test_the_duplicate_trigger_does_nothing_once_the_rebalance_moved_on(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    rid = _request(engine, book, book.accounts[0])
    optimizer = Recommender()
    with UnitOfWork(engine, book.tenant) as uow:
        assert recommending.recommend(uow, optimizer, rid) is not None
    (reb,) = rows(engine, orm.rebalances, id=rid)
    assert reb.status != "requested"
    n_recs = len(rows(engine, orm.recommendations, rebalance_id=rid))
    # the stranded original (or a requeued copy) delivered late: no second recommendation
    with UnitOfWork(engine, book.tenant) as uow:
        assert recommending.recommend(uow, optimizer, rid) is None
    assert len(rows(engine, orm.recommendations, rebalance_id=rid)) == n_recs == 1
    # and a rebalance past ``requested`` is never requeued, however old
    _age(engine, rid, timedelta(hours=1))
    with UnitOfWork(engine, book.tenant) as uow:
        assert rid not in recommending.requeue_stalled(uow, datetime.now(UTC))


def test_the_sweeper_requeues_on_its_schedule_and_settings_reach_it(engine: Any) -> None:
    book = make_book(engine, n_accounts=1)
    rid = _request(engine, book, book.accounts[0])
    _age(engine, rid, timedelta(hours=2))
    settings = Settings(rebalance_requeue_after_s=3600)
    sweeper = OrderSweeper.from_settings(engine, settings)
    assert sweeper.requeue_after == timedelta(hours=1)
    now = datetime.now(UTC)
    sweeper.sweep_once(now)
    assert len(_triggers(engine, rid)) == 2
    _age(engine, rid, timedelta(hours=2))
    sweeper.sweep_once(now + timedelta(minutes=10))  # within a quarter of the timeout: no check
    assert len(_triggers(engine, rid)) == 2
    sweeper.sweep_once(now + timedelta(minutes=16))
    assert len(_triggers(engine, rid)) == 3
    off = OrderSweeper(engine, requeue_after=None)
    _age(engine, rid, timedelta(hours=2))
    off.sweep_once()
    assert len(_triggers(engine, rid)) == 3


def test_requeue_setting_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rebalance_requeue_after_s"):
        Settings(rebalance_requeue_after_s=0)


def test_the_relay_process_runs_the_sweeper(scratch: Any, tmp_path: Any) -> None:
    """``rebalancer relay`` (the production topology's separate relay) sweeps too: a stalled
    request in its database is triggered again, and SIGTERM ends it cleanly."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from rebalancer.adapters import migrate

    migrate.upgrade(scratch)
    book = make_book(scratch, n_accounts=1)
    rid = _request(scratch, book, book.accounts[0])
    _age(scratch, rid, timedelta(hours=1))
    src = Path(__file__).resolve().parents[3] / "src"
    env = {
        **os.environ,
        "REBALANCER_DATABASE_URL": scratch.url.render_as_string(hide_password=False),
        # no broker here: the sweeper needs only the database, and the session's topics stay
        # free of this scratch tenant's events
        "REBALANCER_PULSAR_URL": f"pulsar://127.0.0.1:{_free_port()}",
        "REBALANCER_DATA_DIR": str(tmp_path / "var"),
        "REBALANCER_REBALANCE_REQUEUE_AFTER_S": "600",
        "REBALANCER_ORDER_SWEEP_INTERVAL_S": "0.5",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    log_path = tmp_path / "relay.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rebalancer.entrypoints.cli", "relay"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while len(_triggers(scratch, rid)) < 2:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log_path.read_text()[-3000:]
    assert len(_triggers(scratch, rid)) == 2  # once per timeout (600 s), not per sweep
