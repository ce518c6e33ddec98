"""Helpers of the batch tests: a small synthetic book, a relay thread, polling a batch."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from rebalancer.adapters import orm
from rebalancer.adapters.outbox_relay import OutboxRelay
from rebalancer.adapters.repositories.bulk import LoadStats, load_scaled_book
from rebalancer.contracts import RebalanceTriggeredV1, decode
from rebalancer.scaled_book import ScaledBook, build_scaled_book
from rebalancer.service_layer.handlers.batch import BATCH_TOPIC, batch_progress
from rebalancer.service_layer.unit_of_work import UnitOfWork


def load_book(
    engine: sa.Engine, n_accounts: int, tenant_id: str = "tenant-a", n_instruments: int = 12
) -> tuple[ScaledBook, LoadStats]:
    """A small synthetic book with unique ids, loaded with COPY."""
    prefix = f"B{uuid.uuid4().hex[:6].upper()}"
    book = build_scaled_book(
        n_accounts, n_instruments=n_instruments, prefix=prefix, tenant_id=tenant_id, seed=3
    )
    with engine.begin() as conn:
        stats = load_scaled_book(conn, book)
    return book, stats


@contextmanager
def relay_running(runtime: Any) -> Iterator[None]:
    """The outbox relay in a thread for the duration of the block."""
    stop = threading.Event()
    relay = OutboxRelay(runtime.engine, runtime.publisher, 500)
    t = threading.Thread(target=relay.run, args=(stop, 0.02), daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(10)


def progress(engine: sa.Engine, tenant_id: str, batch_id: uuid.UUID) -> dict[str, Any]:
    with UnitOfWork(engine, tenant_id) as uow:
        return batch_progress(uow, batch_id)


def wait_finished(
    engine: sa.Engine, tenant_id: str, batch_id: uuid.UUID, timeout_s: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        p = progress(engine, tenant_id, batch_id)
        if p["status"] == "finished":
            return p
        assert time.monotonic() < deadline, f"batch not finished in {timeout_s} s: {p}"
        time.sleep(0.2)


def recommendations_per_account(engine: sa.Engine, batch_id: uuid.UUID) -> dict[str, int]:
    """Account id -> number of recommendations of the batch's rebalances."""
    r, rec = orm.rebalances, orm.recommendations
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(r.c.account_id, sa.func.count(rec.c.id))
            .select_from(r.outerjoin(rec, rec.c.rebalance_id == r.c.id))
            .where(r.c.batch_id == batch_id)
            .group_by(r.c.account_id)
        ).all()
    return {a: int(n) for a, n in rows}


def queued_items(
    engine: sa.Engine, batch_id: uuid.UUID
) -> list[tuple[uuid.UUID, RebalanceTriggeredV1]]:
    """The batch's queued messages (event id, payload), read back from the outbox."""
    o = orm.outbox
    with engine.connect() as conn:
        bodies = conn.execute(
            sa.select(o.c.body).where(
                o.c.topic == BATCH_TOPIC, o.c.body.contains(f"batch:{batch_id}".encode())
            )
        ).scalars()
        envs = [decode(bytes(b)) for b in bodies]
    return [(e.event_id, RebalanceTriggeredV1.model_validate(e.payload)) for e in envs]


def computed_batch(
    engine: sa.Engine, n_accounts: int, tenant_id: str = "tenant-a", n_instruments: int = 6
) -> tuple[ScaledBook, uuid.UUID]:
    """A small book whose batch rebalance was started and computed in this process (Clarabel
    chain, one chunk): its recommendations await approval. Returns the book and batch id."""
    from rebalancer.optimizer import Recommender
    from rebalancer.service_layer.handlers.batch import recommend_chunk, start_batch

    book, _ = load_book(engine, n_accounts, tenant_id, n_instruments)
    with UnitOfWork(engine, tenant_id) as uow:
        batch = start_batch(uow, book.model.id, actor="test")
        uow.commit()
    with UnitOfWork(engine, tenant_id) as uow:
        recommend_chunk(uow, Recommender(), queued_items(engine, batch.batch_id))
    return book, batch.batch_id
